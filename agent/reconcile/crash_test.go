package reconcile_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestReconciledExitGetsACrashReport: an exit no event told (the watcher
// was not running) is repaired as reconcile_exit with its crash report:
// the engine's last lines, its exit code, the repair's event. A pass that
// finds nothing to repair writes none.
func TestReconciledExitGetsACrashReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.create("crashed")
	e.record(g, runtime.StatusRunning)
	e.start(g)
	if _, err := e.raw.ContainerKill(e.ctx, g.c.ID, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "container exited", func() bool {
		c, err := e.eng.InspectContainer(e.ctx, g.c.ID)
		return err == nil && c.State == "exited"
	})
	r := e.reconciler(-1)
	if rep := e.pass(r); rep.Stopped != 1 {
		t.Fatalf("pass %+v, want one stop", rep)
	}
	if e.get("crashed").Status != runtime.StatusStopped {
		t.Fatal("record not stopped")
	}
	e.pass(r)
	rs, err := e.store.CrashReports(e.ctx, "crashed", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d crash reports, want 1", len(rs))
	}
	c := rs[0]
	if c.ContainerID != g.c.ID || c.ExitCode == nil || *c.ExitCode != 137 || c.EventID == 0 || c.CaptureError != "" {
		t.Fatalf("crash report %+v", c)
	}
	// The engine printed nothing on stdout; its start wrote nothing either:
	// what is there is only what it printed (no line is invented).
	for _, l := range c.Output.Lines {
		if strings.TrimSpace(l.Text) == "" {
			t.Errorf("empty line kept: %+v", c.Output.Lines)
		}
	}
}
