package job

import (
	"fmt"
	"path/filepath"
	"strings"
)

// stateDirRule is the rule quoted in error messages.
const stateDirRule = "state_dir is empty (the game's own directory: the game id) or the game id, " +
	"optionally followed by '/' and elements of letters, digits, '.', '_' and '-' not starting with '.' or '-'"

// ResolveStatePath returns the host directory of a game's state:
// filepath.Join(root, stateDir), or filepath.Join(root, gameID) when
// stateDir is empty. The result must be the game's own directory
// (root/gameID) or lie inside it, so that a job for one game cannot
// mount another game's state.
//
// The check is lexical only: stateDir must be relative, without ".."
// elements, NUL or other characters outside [A-Za-z0-9._-] (which also
// keeps ':' and ',' out of bind-mount specifications), and its first
// element (after "." and empty ones) must be the game id. Whether a
// symlink on the way leads out of the game's directory can only be
// checked on the filesystem, which is the executor's job.
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
	if ValidateGameID(gameID) != nil {
		// Decode refuses such a job first; this keeps a bad id from
		// naming the root ("") or a path ("a/..") as the game's directory.
		return bad(fmt.Sprintf("cannot be checked: the game id %s is not valid, so the game has no state directory", quote(gameID)))
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
	if !InsideGameDir(root, gameID, path) {
		return bad(fmt.Sprintf("does not start with the game id %s: a job may only use its own game's state", quote(gameID)))
	}
	return path, nil
}

func isStateDirChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// GameDir returns the game's own directory under the state root: the
// directory a start job without state_dir uses, and the one every state
// directory of the game must be or lie inside.
func GameDir(root, gameID string) string {
	return filepath.Join(root, gameID)
}

// InsideGameDir reports whether path is a clean absolute path that is the
// game's own directory under root or lies inside it. Lexical only.
func InsideGameDir(root, gameID, path string) bool {
	if ValidateGameID(gameID) != nil || !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return false
	}
	dir := GameDir(root, gameID)
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}
