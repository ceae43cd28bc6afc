package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/outbox"
)

// mountTmpfs mounts a small tmpfs at dir (options as for mount -o) and
// unmounts it at cleanup; it returns why it cannot when it cannot.
func mountTmpfs(t *testing.T, dir, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return "mounting a tmpfs needs root"
	}
	must(t, os.MkdirAll(dir, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "rtm-faults", dir).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("mount -t tmpfs -o %s: %v: %s", opts, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return ""
}

// TestStateDirFullOrReadOnly starts games whose state directory must be
// created on a full filesystem and on a read-only one, each mounted as the
// game's own directory in the state root: each start job fails with an
// error that says so, and leaves no container, no record and no directory
// behind.
func TestStateDirFullOrReadOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	fullGame, roGame := h.game("full"), h.game("ro")
	full, ro := filepath.Join(h.stateRoot, fullGame), filepath.Join(h.stateRoot, roGame)
	if why := mountTmpfs(t, full, "size=64k,nr_inodes=16"); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot build a full filesystem under CI (it runs as root): %s", why)
		}
		t.Skipf("cannot build a full filesystem: %s", why)
	}
	// Fill it: inodes run out first (tmpfs directories take no blocks).
	for i := 0; ; i++ {
		err := os.WriteFile(filepath.Join(full, fmt.Sprintf("fill-%d", i)), make([]byte, 1024), 0o600)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		must(t, err)
		if i > 10000 {
			t.Fatal("the tmpfs does not fill up")
		}
	}
	if why := mountTmpfs(t, ro, "size=64k,ro"); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot mount a read-only filesystem under CI (it runs as root): %s", why)
		}
		t.Skipf("cannot mount a read-only filesystem: %s", why)
	}
	h.startConsumer()
	h.startAgent()

	type tc struct {
		scenario, game, dir, wantErr string
		id                           int64
	}
	cases := []*tc{
		{scenario: "state directory on a full disk", game: fullGame, dir: fullGame + "/game", wantErr: "no space left on device"},
		{scenario: "state directory on a read-only filesystem", game: roGame, dir: roGame + "/game", wantErr: "read-only file system"},
	}
	// One attempt: the error is a filesystem's, which a retry may cure,
	// so the agent would otherwise retry with backoff.
	for _, c := range cases {
		c.id = h.enqueue(c.game, "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": %q}`, h.image, c.dir), 1)
	}
	ok := h.enqueue(h.game("ok"), "start", startPayload(h.image), 0)
	h.waitJobs(time.Minute, ok, cases[0].id, cases[1].id)
	f := h.check(checkOptions{})
	for _, c := range cases {
		var violations int
		bad := func(format string, a ...any) {
			violations++
			t.Logf("VIOLATION: %s: %s", c.scenario, fmt.Sprintf(format, a...))
		}
		j := h.job(c.id)
		if j.Status != "failed" || !strings.Contains(deref(j.LastError), c.wantErr) {
			bad("job ended %s with %q, want failed naming %q", j.Status, deref(j.LastError), c.wantErr)
		}
		if _, err := h.eng.InspectContainer(h.ctx, "galaxy-game-"+c.game); err == nil {
			bad("a container exists")
		}
		if _, err := h.store.GetRecord(h.ctx, c.game); err == nil {
			bad("a record exists")
		}
		if _, err := os.Lstat(filepath.Join(h.stateRoot, c.dir)); err == nil {
			bad("the state directory %s exists", c.dir)
		}
		t.Logf("%s: job %d failed with %q", c.scenario, j.ID, deref(j.LastError))
		g := f
		g.Violations += violations
		g.Scenario, g.Rounds = c.scenario, 1
		g.Faults = "start job on a " + map[bool]string{true: "64 KiB tmpfs with no inode left", false: "read-only tmpfs"}[c.game == fullGame]
		h.report(g)
	}
}

// TestStateDirOfAnotherGame runs a game B, then jobs of other games that
// try to reach B's state directory: by naming it, a directory inside it,
// or a symlink to it in their own directory, or with their own directory
// a symlink to it. Each job fails at once naming state_dir, B's record,
// container and directory stay as they were, and a symlink that stays in
// a game's own directory still works.
func TestStateDirOfAnotherGame(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	victim := h.game("b")
	linked, cross, alias := h.game("a-link"), h.game("a-cross"), h.game("a-alias")
	bDir := filepath.Join(h.stateRoot, victim)
	must(t, os.MkdirAll(filepath.Join(bDir, "saves"), 0o750))
	must(t, os.WriteFile(filepath.Join(bDir, "saves", "world"), []byte("b's state"), 0o600))
	must(t, os.MkdirAll(filepath.Join(h.stateRoot, cross), 0o750))
	must(t, os.Symlink(bDir, filepath.Join(h.stateRoot, cross, "to-b")))
	must(t, os.Symlink("../"+victim+"/saves", filepath.Join(h.stateRoot, cross, "to-b-rel")))
	must(t, os.Symlink(bDir, filepath.Join(h.stateRoot, linked)))
	must(t, os.MkdirAll(filepath.Join(h.stateRoot, alias, "real"), 0o750))
	must(t, os.Symlink("real", filepath.Join(h.stateRoot, alias, "current")))
	h.startConsumer()
	h.startAgent()

	vj := h.enqueue(victim, "start", startPayload(h.image), 0)
	if !h.waitJobs(time.Minute, vj) || h.job(vj).Status != "succeeded" {
		t.Fatalf("game b did not start: %+v", h.job(vj))
	}
	before, err := h.store.GetRecord(h.ctx, victim)
	must(t, err)
	bFiles := dirNames(t, bDir) // saves, and what the engine wrote

	type tc struct {
		name, game, stateDir string
		id                   int64
	}
	cases := []*tc{
		{name: "names b's directory", game: h.game("a1"), stateDir: victim},
		{name: "names a directory in b's", game: h.game("a2"), stateDir: victim + "/saves"},
		{name: "symlink in its directory to b's", game: cross, stateDir: cross + "/to-b"},
		{name: "relative symlink in its directory into b's", game: cross, stateDir: cross + "/to-b-rel/x"},
		{name: "its directory a symlink to b's", game: linked},
	}
	for _, c := range cases {
		payload := startPayload(h.image)
		if c.stateDir != "" {
			payload = fmt.Sprintf(`{"image_ref": %q, "state_dir": %q}`, h.image, c.stateDir)
		}
		c.id = h.enqueue(c.game, "start", payload, 0)
	}
	ok := h.enqueue(alias, "start", fmt.Sprintf(`{"image_ref": %q, "state_dir": %q}`, h.image, alias+"/current/v1"), 0)
	ids := []int64{ok}
	for _, c := range cases {
		ids = append(ids, c.id)
	}
	h.waitJobs(time.Minute, ids...)

	f := h.check(checkOptions{})
	bad := func(format string, a ...any) {
		f.Violations++
		t.Logf("VIOLATION: "+format, a...)
	}
	for _, c := range cases {
		j := h.job(c.id)
		if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(deref(j.LastError), "state_dir") {
			bad("%s: job ended %s after %d attempts with %q; want failed at once naming state_dir", c.name, j.Status, j.Attempt, deref(j.LastError))
		}
		if _, err := h.store.GetRecord(h.ctx, c.game); err == nil {
			bad("%s: game %s has a record", c.name, c.game)
		}
		if _, err := h.eng.InspectContainer(h.ctx, "galaxy-game-"+c.game); err == nil {
			bad("%s: game %s has a container", c.name, c.game)
		}
		t.Logf("%s: job %d failed with %q", c.name, j.ID, deref(j.LastError))
	}
	if j := h.job(ok); j.Status != "succeeded" {
		bad("a symlink inside the game's own directory: job ended %s with %q", j.Status, deref(j.LastError))
	} else if rec, err := h.store.GetRecord(h.ctx, alias); err != nil || rec.StatePath != filepath.Join(h.stateRoot, alias, "current", "v1") {
		bad("a symlink inside the game's own directory: record %+v, %v", rec, err)
	} else if _, err := os.Stat(filepath.Join(h.stateRoot, alias, "real", "v1")); err != nil {
		bad("a symlink inside the game's own directory: the directory was not created through it: %v", err)
	}
	after, err := h.store.GetRecord(h.ctx, victim)
	must(t, err)
	if !snapshotEqual(outbox.Snapshot(before), outbox.Snapshot(after)) {
		bad("game b's record changed: %+v -> %+v", before, after)
	}
	if c, err := h.eng.InspectContainer(h.ctx, before.CurrentContainerID); err != nil || !c.Running {
		bad("game b's container is not running: %v", err)
	}
	if got := dirNames(t, bDir); !slices.Equal(got, bFiles) {
		bad("game b's directory changed: %q -> %q", bFiles, got)
	}
	if got := dirNames(t, filepath.Join(bDir, "saves")); !slices.Equal(got, []string{"world"}) {
		bad("game b's saves hold %q, want only world", got)
	}
	f.Scenario, f.Rounds = "state directory of another game", 1
	f.Faults = "start jobs naming, or reaching through symlinks, another game's state directory"
	h.report(f)
}
