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

// ensureStateDir makes sure the state directory path, which job.Decode has
// already checked lexically to lie inside root, also lies inside root on
// the filesystem: every element that exists is resolved (symlinks
// included) and must stay inside the resolved root, every element that is
// missing is created with mode 0750. It returns the resolved directory,
// which is what gets bind-mounted: Docker resolves symlinks in a bind
// source itself, so mounting the checked path, not the requested one,
// keeps a symlink planted after the check from redirecting the mount.
//
// A path that escapes the root is a job error (permanent, wrapping
// job.ErrStateDirOutsideRoot); a filesystem error is not (it may pass).
func ensureStateDir(root, path string) (string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolve state root %s: %w", root, err)
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", outside(path, "is not inside the state root "+root)
	}
	cur := realRoot
	for _, elem := range strings.Split(rel, string(filepath.Separator)) {
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
			target, err := filepath.EvalSymlinks(next)
			if err != nil {
				return "", outside(path, fmt.Sprintf("has a symlink %s that does not resolve (%v)", next, err))
			}
			if !inside(realRoot, target) {
				return "", outside(path, fmt.Sprintf("has a symlink %s pointing outside the state root, to %s", next, target))
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
	if !inside(realRoot, resolved) {
		return "", outside(path, "resolves to "+resolved+", outside the state root")
	}
	return resolved, nil
}

// inside reports whether path lies strictly inside root (both resolved).
func inside(root, path string) bool {
	return strings.HasPrefix(path, root+string(filepath.Separator))
}

func outside(path, why string) error {
	return &job.FieldError{Field: "state_dir", Err: job.ErrStateDirOutsideRoot, Detail: fmt.Sprintf("%q %s", path, why)}
}
