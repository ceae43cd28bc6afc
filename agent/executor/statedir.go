package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// stateDirMode is the mode of the state directories the agent creates:
// the engine's group may read them, nobody else.
const stateDirMode = 0o750

// ensureStateDir makes sure the state directory path of game gameID,
// which job.Decode has already checked lexically to be the game's own
// directory under root (root/gameID) or to lie inside it, is so on the
// filesystem too: every element that exists is resolved (symlinks
// included) and must stay in the game's directory, every element that is
// missing is created with mode 0750. The game's directory itself must be
// a real directory, not a symlink: a symlink there could hand the game
// another game's state. It returns the resolved directory, which is what
// gets bind-mounted: Docker resolves symlinks in a bind source itself, so
// mounting the checked path, not the requested one, keeps a symlink
// planted after the check from redirecting the mount.
//
// A path that escapes the game's directory is a job error (permanent,
// wrapping job.ErrStateDirOutsideRoot); a filesystem error is not (it may
// pass).
func ensureStateDir(root, gameID, path string) (string, error) {
	if !job.InsideGameDir(root, gameID, path) {
		return "", outside(path, fmt.Sprintf("is not the directory of game %s under the state root %s, nor inside it", gameID, root))
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolve state root %s: %w", root, err)
	}
	// The game's directory in the resolved root; it is checked below to
	// be a real directory, so it is its own resolved path.
	gameDir := filepath.Join(realRoot, gameID)
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return "", outside(path, "is not inside the state root "+root)
	}
	cur := realRoot
	for i, elem := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, elem)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(next, stateDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
				return "", fmt.Errorf("create state directory %s: %w", next, err)
			}
			// Look again: something may have raced us to the name.
			fi, err = os.Lstat(next)
		}
		if err != nil {
			return "", fmt.Errorf("check state directory %s: %w", next, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if i == 0 {
				return "", outside(path, fmt.Sprintf("has the game's own directory %s as a symlink; it must be a real directory", next))
			}
			target, err := filepath.EvalSymlinks(next)
			if err != nil {
				return "", outside(path, fmt.Sprintf("has a symlink %s that does not resolve (%v)", next, err))
			}
			if !insideOrAt(gameDir, target) {
				return "", outside(path, fmt.Sprintf("has a symlink %s pointing outside the game's directory %s, to %s", next, gameDir, target))
			}
			if fi, err = os.Stat(target); err != nil {
				return "", fmt.Errorf("check state directory %s: %w", target, err)
			}
			next = target
		}
		if !fi.IsDir() {
			return "", outside(path, next+" is not a directory")
		}
		cur = next
	}
	// Belt and braces: the whole path, resolved at once.
	resolved, err := filepath.EvalSymlinks(cur)
	if err != nil {
		return "", fmt.Errorf("resolve state directory %s: %w", cur, err)
	}
	if !insideOrAt(gameDir, resolved) {
		return "", outside(path, "resolves to "+resolved+", outside the game's directory "+gameDir)
	}
	return resolved, nil
}

// insideOrAt reports whether path is dir or lies inside it (both
// resolved).
func insideOrAt(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

func outside(path, why string) error {
	return &job.FieldError{Field: "state_dir", Err: job.ErrStateDirOutsideRoot, Detail: fmt.Sprintf("%q %s", path, why)}
}
