package executor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// TestEnsureStateDir runs the filesystem check on a real directory tree:
// a game's state directory is created inside the game's own directory,
// through symlinks that stay there, and refused when it names or reaches
// another game's directory or leaves the state root.
func TestEnsureStateDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root := filepath.Join(base, "state")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "b", "data"), filepath.Join(root, "a", "real")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, link string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	symlink(filepath.Join(root, "b"), "a/to-b")          // game a's dir to game b's
	symlink("../b/data", "a/to-b-rel")                   // the same, relative
	symlink(outside, "a/out")                            // out of the root
	symlink(filepath.Join(root, "a", "real"), "a/alias") // stays in a's dir
	symlink("real", "a/alias-rel")                       // the same, relative
	symlink(filepath.Join(root, "a"), "a/self")          // a's dir itself
	symlink(filepath.Join(root, "b"), "c")               // game c's dir is b's
	symlink("/nonexistent-rtm-statedir", "a/dangling")   // leads nowhere
	symlink(filepath.Join(root, "a", "real"), "d")       // game d's dir is inside a's
	if err := os.WriteFile(filepath.Join(root, "a", "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	ok := []struct{ game, path, want string }{
		{"a", "a", "a"},
		{"a", "a/new/deeper", "a/new/deeper"},
		{"a", "a/alias/g", "a/real/g"},
		{"a", "a/alias-rel", "a/real"},
		{"a", "a/self/x", "a/x"},
		{"e", "e", "e"}, // created
	}
	for _, c := range ok {
		got, err := ensureStateDir(root, c.game, filepath.Join(root, c.path))
		if err != nil {
			t.Errorf("game %s, %s: %v", c.game, c.path, err)
			continue
		}
		if want := filepath.Join(root, c.want); got != want {
			t.Errorf("game %s, %s: mount %s, want %s", c.game, c.path, got, want)
		}
		fi, err := os.Stat(got)
		switch {
		case err != nil || !fi.IsDir():
			t.Errorf("game %s, %s: %s is not a directory: %v", c.game, c.path, got, err)
		case c.game == "e" && fi.Mode().Perm() != stateDirMode:
			t.Errorf("game %s: created with mode %o, want %o", c.game, fi.Mode().Perm(), stateDirMode)
		}
	}

	refused := []struct{ game, path, why string }{
		{"a", "b", "nor inside it"},      // another game's directory
		{"a", "b/data", "nor inside it"}, // inside another game's
		{"a", "ab", "nor inside it"},     // shares a prefix
		{"a", "", "nor inside it"},       // the root itself
		{"a", "a/to-b", "outside the game's directory"},
		{"a", "a/to-b/data/x", "outside the game's directory"},
		{"a", "a/to-b-rel", "outside the game's directory"},
		{"a", "a/out/x", "outside the game's directory"},
		{"a", "a/dangling", "does not resolve"},
		{"a", "a/file/x", "is not a directory"},
		{"c", "c", "must be a real directory"},
		{"c", "c/x", "must be a real directory"},
		{"d", "d", "must be a real directory"},
	}
	for _, c := range refused {
		_, err := ensureStateDir(root, c.game, filepath.Join(root, c.path))
		if !errors.Is(err, job.ErrStateDirOutsideRoot) || !job.IsPermanent(err) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("game %s, %q: %v; want a permanent ErrStateDirOutsideRoot saying %q", c.game, c.path, err, c.why)
		}
	}
	// Nothing was created through the symlinks that were refused.
	for _, p := range []string{filepath.Join(outside, "x"), filepath.Join(root, "b", "x")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(root, "b")); err != nil || len(entries) != 1 {
		t.Errorf("game b's directory changed: %v %v", entries, err)
	}
}
