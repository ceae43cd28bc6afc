// Package dockerd finds the machine's Docker daemon process and starts it
// again the way it was started, for the tests that restart or crash it.
// A daemon run by systemd is refused: its manager would restart it behind
// the test's back.
package dockerd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is the daemon as found in /proc, with what it takes to start it
// again the same way.
type Process struct {
	Pid      int
	children []int // its containerd
	args     []string
	env      []string
	dir      string
}

// Find returns the one dockerd process a test may restart, or a reason it
// may not: it must be a plain process (not a systemd unit) that this test
// can signal.
func Find() (Process, string) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return Process{}, "no /proc"
	}
	var found []Process
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		base := filepath.Join("/proc", en.Name())
		comm, err := os.ReadFile(filepath.Join(base, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" || !Alive(pid) {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join(base, "cmdline"))
		environ, err2 := os.ReadFile(filepath.Join(base, "environ"))
		cwd, err3 := os.Readlink(filepath.Join(base, "cwd"))
		cg, _ := os.ReadFile(filepath.Join(base, "cgroup"))
		if err := errors.Join(err1, err2, err3); err != nil {
			return Process{}, "cannot read dockerd's process: " + err.Error()
		}
		if bytes.Contains(cg, []byte(".service")) {
			return Process{}, "dockerd runs as a systemd service"
		}
		split := func(b []byte) []string { return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") }
		found = append(found, Process{Pid: pid, args: split(cmdline), env: split(environ), dir: cwd})
	}
	if len(found) != 1 {
		return Process{}, "want exactly one dockerd process, found " + strconv.Itoa(len(found))
	}
	if err := syscall.Kill(found[0].Pid, 0); err != nil {
		return Process{}, "cannot signal dockerd: " + err.Error()
	}
	for _, en := range entries {
		if pid, err := strconv.Atoi(en.Name()); err == nil && parentOf(pid) == found[0].Pid {
			found[0].children = append(found[0].children, pid)
		}
	}
	return found[0], ""
}

// Alive reports whether a process runs; a zombie waiting for its parent
// counts as gone.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// inProc reports whether /proc still lists pid, zombie or not.
func inProc(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// parentOf returns the parent pid of pid, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// Start launches dockerd again as it was started, detached (it outlives
// the test), its output appended to a log file in the temporary directory.
// It first waits for the old daemon and its containerd to leave /proc: a
// killed daemon stays there as a zombie until PID 1 reaps it, and a new one
// refuses to start (pid file found) or waits for the old containerd.
func (p Process) Start() (int, error) {
	path, err := exec.LookPath(p.args[0])
	if err != nil {
		return 0, err
	}
	for _, pid := range append([]int{p.Pid}, p.children...) {
		if !gone(pid, time.Minute) {
			return 0, fmt.Errorf("the old dockerd's process %d is still in /proc a minute after it ended", pid)
		}
	}
	logf, err := os.OpenFile(filepath.Join(os.TempDir(), "rtmanager-test-dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(path, p.args[1:]...)
	cmd.Args[0] = p.args[0] // as it was started
	cmd.Env, cmd.Dir = p.env, p.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return cmd.Process.Pid, nil
}

// gone polls /proc until pid has left it or d passes.
func gone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for inProc(pid) {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
