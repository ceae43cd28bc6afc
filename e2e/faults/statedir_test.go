package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
// created on a full filesystem and on a read-only one, both mounted
// inside the state root: each start job fails with an error that says
// so, and leaves no container, no record and no directory behind.
func TestStateDirFullOrReadOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	full, ro := filepath.Join(h.stateRoot, "full"), filepath.Join(h.stateRoot, "ro")
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
		{scenario: "state directory on a full disk", game: h.game("full"), dir: "full/game", wantErr: "no space left on device"},
		{scenario: "state directory on a read-only filesystem", game: h.game("ro"), dir: "ro/game", wantErr: "read-only file system"},
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
		g.Faults = "start job on a " + map[bool]string{true: "64 KiB tmpfs with no inode left", false: "read-only tmpfs"}[strings.HasPrefix(c.dir, "full")]
		h.report(g)
	}
}
