package job

import (
	"fmt"
	"path/filepath"
	"strings"
)

// stateDirRule is the rule quoted in error messages.
const stateDirRule = "state_dir is a relative path of elements made of letters, digits, '.', '_' and '-', " +
	"not starting with '.' or '-'"

// ResolveStatePath returns the host directory of a game's state:
// filepath.Join(root, stateDir), or filepath.Join(root, gameID) when
// stateDir is empty. The check is lexical only: stateDir must be
// relative, without ".." elements, NUL or other characters outside
// [A-Za-z0-9._-] (which also keeps ':' and ',' out of bind-mount
// specifications), and the result must lie strictly inside root. Whether
// a symlink on the way leads out of root can only be checked on the
// filesystem, which is the executor's job.
//
// Errors wrap ErrStateDirOutsideRoot, or ErrInvalidPolicy when root
// itself is unusable (not absolute, not clean, or "/").
func ResolveStatePath(root, gameID, stateDir string) (string, error) {
	if err := validateStateRoot(root); err != nil {
		return "", err
	}
	dir, what := stateDir, quote(stateDir)
	if dir == "" {
		dir, what = gameID, quote(gameID)+" (the game id, as state_dir is empty)"
	}
	bad := func(why string) (string, error) {
		return "", fieldErr("state_dir", ErrStateDirOutsideRoot, what+" "+why+"; "+stateDirRule)
	}
	switch {
	case dir == "":
		return bad("is empty")
	case len(dir) > MaxStateDirBytes:
		return bad(fmt.Sprintf("is %d bytes long, over the limit of %d", len(dir), MaxStateDirBytes))
	case strings.IndexByte(dir, 0) >= 0:
		return bad("contains a NUL byte")
	case filepath.IsAbs(dir):
		return bad("is absolute; it must be relative to the state root")
	}
	for _, elem := range strings.Split(dir, "/") {
		switch {
		case elem == "" || elem == ".":
			// Harmless: Join cleans them away.
		case elem == "..":
			return bad(`contains a ".." element`)
		case len(elem) > MaxStateDirElementBytes:
			return bad(fmt.Sprintf("has an element of %d bytes, over the limit of %d", len(elem), MaxStateDirElementBytes))
		case elem[0] == '.' || elem[0] == '-':
			return bad(fmt.Sprintf("has element %s starting with %q", quote(elem), elem[0]))
		default:
			for _, c := range elem {
				if !isStateDirChar(c) {
					return bad(fmt.Sprintf("contains %q", c))
				}
			}
		}
	}
	path := filepath.Join(root, dir)
	if !strings.HasPrefix(path, root+string(filepath.Separator)) {
		return bad("does not name a directory strictly inside the state root")
	}
	return path, nil
}

func isStateDirChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// insideRoot reports whether path is a clean absolute path strictly
// inside the clean absolute root.
func insideRoot(root, path string) bool {
	return filepath.IsAbs(path) && filepath.Clean(path) == path && strings.HasPrefix(path, root+string(filepath.Separator))
}
