package watcher_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockerd"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// TestDaemonRestart restarts the dockerd behind DOCKER_HOST (or the default
// socket) while the watcher runs: the watcher reconnects and the records
// end true. It runs only with
// RTM_TEST_RESTART_DOCKERD=1, which `make test` sets under CI in a run of
// its own after every other test (a restart would pull the daemon from
// under the Docker tests of other packages running in parallel), and only
// when dockerd is a plain process this test can signal.
func TestDaemonRestart(t *testing.T) {
	if os.Getenv("RTM_TEST_RESTART_DOCKERD") != "1" {
		t.Skip("restarts dockerd: set RTM_TEST_RESTART_DOCKERD=1 to run (make test does under CI)")
	}
	d, why := dockerd.Find()
	if why != "" {
		t.Fatalf("RTM_TEST_RESTART_DOCKERD=1 but dockerd cannot be restarted here: %s", why)
	}
	t.Logf("restarting %s", d)
	e := newEnv(t)
	e.startWatcher(watcher.Config{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, IdleTimeout: 5 * time.Second})

	a := e.runningGame("a") // no restart policy: exited after the restart
	b := e.createWithRestartPolicy("b", container.RestartPolicy{Name: container.RestartPolicyAlways})
	e.record(b)
	e.startReady(b)
	before := e.w.Stats()

	// Restore the daemon whatever happens below.
	restarted := false
	t.Cleanup(func() {
		if restarted && e.eng.Ping(context.Background()) == nil {
			return
		}
		if _, why := dockerd.Find(); why == "" {
			return // running (started by the test, or never stopped)
		}
		if _, err := d.Start(); err != nil {
			t.Errorf("could not start dockerd again: %v", err)
		}
	})
	if err := syscall.Kill(d.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 2*time.Minute, "dockerd to exit", func() bool { return !dockerd.Alive(d.Pid) })
	wait.For(t, time.Minute, "watcher to notice", func() bool { return !e.w.Connected() })
	if _, err := d.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	restarted = true
	wait.For(t, 2*time.Minute, "dockerd to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return e.eng.Ping(ctx) == nil
	})
	wait.For(t, 2*time.Minute, "watcher to reconnect", func() bool { return e.w.Connected() && e.w.Stats().Reconnects > before.Reconnects })

	e.waitStatus("a", runtime.StatusStopped)
	wait.For(t, time.Minute, "b running again", func() bool {
		c, err := e.eng.InspectContainer(e.ctx, b.c.ID)
		return err == nil && c.State == "running" && e.get("b").Status == runtime.StatusRunning
	})
	if c, err := e.eng.InspectContainer(e.ctx, a.c.ID); err != nil || c.State != "exited" {
		t.Errorf("a after the restart: %+v, %v", c, err)
	}
	// The new subscription delivers events.
	c := e.runningGame("c")
	e.kill(c.c.ID, "SIGKILL")
	e.waitStatus("c", runtime.StatusStopped)
	t.Logf("stats %+v", e.w.Stats())
}
