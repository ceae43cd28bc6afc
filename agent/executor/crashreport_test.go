package executor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestEngineThatCrashesAtStartHasACrashReport: an engine that exits with
// code 7 as soon as it starts, under a start job (no events watcher here):
// whichever of the job's look at commit (observed_die) and a relist
// (reconcile_exit) records the exit, the game's crash report holds the
// exit code and the engine's last words.
func TestEngineThatCrashesAtStartHasACrashReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	id := e.insert("crashstart", "start", fmt.Sprintf(`{"image_ref": %q, "env": {"ENGINE_EXIT_AFTER": "0s", "ENGINE_EXIT_CODE": "7"}, "limits": {"pids_limit": 64}}`, e.image))
	e.succeeded(id)
	r := e.record("crashstart")
	if r.Status == runtime.StatusRunning {
		// The job looked before the engine exited: a relist records it,
		// once Docker has seen the exit (a relist before it finds the
		// engine running, which it still is).
		wait.For(t, time.Minute, "the engine to exit", func() bool {
			c, err := e.eng.InspectContainer(context.Background(), r.CurrentContainerID)
			return err == nil && !c.Running
		})
		rec := reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: -1, EventGrace: -1})
		if _, err := rec.Pass(context.Background(), "test"); err != nil {
			t.Fatal(err)
		}
		if r = e.record("crashstart"); r.Status != runtime.StatusStopped {
			t.Fatalf("record %s after a relist, want stopped", r.Status)
		}
	}
	rs, err := e.store.CrashReports(context.Background(), "crashstart", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d crash reports, want 1 (events %v)", len(rs), e.events("crashstart"))
	}
	c := rs[0]
	if c.ExitCode == nil || *c.ExitCode != 7 || c.ContainerID != r.CurrentContainerID {
		t.Fatalf("crash report %+v", c.Report)
	}
	var text []string
	for _, l := range c.Output.Lines {
		text = append(text, string(l.Stream)+": "+l.Text)
	}
	if !strings.Contains(strings.Join(text, "\n"), "stderr: engine: ENGINE_EXIT_AFTER elapsed, exiting with 7") {
		t.Fatalf("crash lines %q lack the engine's last words", text)
	}
	t.Logf("events: %v", e.events("crashstart"))
}
