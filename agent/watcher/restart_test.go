package watcher_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// dockerd is the daemon process as found in /proc, with what it takes to
// start it again the same way.
type dockerd struct {
	pid  int
	args []string
	env  []string
	dir  string
}

// findDockerd returns the one dockerd process this test may restart, or a
// reason not to: it must be a plain process (not a systemd unit, whose
// manager would fight us) that we can signal.
func findDockerd() (dockerd, string) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return dockerd{}, "no /proc"
	}
	var found []dockerd
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		base := filepath.Join("/proc", en.Name())
		comm, err := os.ReadFile(filepath.Join(base, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join(base, "cmdline"))
		environ, err2 := os.ReadFile(filepath.Join(base, "environ"))
		cwd, err3 := os.Readlink(filepath.Join(base, "cwd"))
		cg, _ := os.ReadFile(filepath.Join(base, "cgroup"))
		if err := errors.Join(err1, err2, err3); err != nil {
			return dockerd{}, "cannot read dockerd's process: " + err.Error()
		}
		if bytes.Contains(cg, []byte(".service")) {
			return dockerd{}, "dockerd runs as a systemd service"
		}
		split := func(b []byte) []string { return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") }
		found = append(found, dockerd{pid: pid, args: split(cmdline), env: split(environ), dir: cwd})
	}
	if len(found) != 1 {
		return dockerd{}, "want exactly one dockerd process, found " + strconv.Itoa(len(found))
	}
	if err := syscall.Kill(found[0].pid, 0); err != nil {
		return dockerd{}, "cannot signal dockerd: " + err.Error()
	}
	return found[0], ""
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie waiting for its parent counts as gone.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// start launches dockerd again as it was started, detached, its output in
// a log file that outlives the test.
func (d dockerd) start() (int, error) {
	path, err := exec.LookPath(d.args[0])
	if err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(os.TempDir(), "rtmanager-test-dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(path, d.args[1:]...)
	cmd.Args[0] = d.args[0] // as it was started
	cmd.Env, cmd.Dir = d.env, d.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return pid, nil
}

// TestDaemonRestart restarts the machine's dockerd while the watcher runs:
// the watcher reconnects and the records end true. It runs only with
// RTM_TEST_RESTART_DOCKERD=1, which `make test` sets under CI in a run of
// its own after every other test (a restart would pull the daemon from
// under the Docker tests of other packages running in parallel), and only
// when dockerd is a plain process this test can signal.
func TestDaemonRestart(t *testing.T) {
	if os.Getenv("RTM_TEST_RESTART_DOCKERD") != "1" {
		t.Skip("restarts dockerd: set RTM_TEST_RESTART_DOCKERD=1 to run (make test does under CI)")
	}
	d, why := findDockerd()
	if why != "" {
		t.Fatalf("RTM_TEST_RESTART_DOCKERD=1 but dockerd cannot be restarted here: %s", why)
	}
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
		if _, why := findDockerd(); why == "" {
			return // running (started by the test, or never stopped)
		}
		if _, err := d.start(); err != nil {
			t.Errorf("could not start dockerd again: %v", err)
		}
	})
	if err := syscall.Kill(d.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 2*time.Minute, "dockerd to exit", func() bool { return !alive(d.pid) })
	wait.For(t, time.Minute, "watcher to notice", func() bool { return !e.w.Connected() })
	if _, err := d.start(); err != nil {
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
