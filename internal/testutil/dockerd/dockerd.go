// Package dockerd finds the Docker daemon the tests talk to — the one
// listening on DOCKER_HOST's socket, or on the default socket — and starts
// it again the way it was started, for the tests that restart or crash it.
//
// The daemon is found by its socket, not by its name, so that a machine may
// run several (the system's and the current one of
// scripts/docker-current.sh). What it takes to start it again is read from
// /proc before it is stopped, and kept in [Process]: its command line,
// environment, working directory and network namespace.
//
// A daemon run by systemd is refused: its manager would restart it behind
// the test's back.
package dockerd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultHost is the Docker client's address when DOCKER_HOST is unset.
const DefaultHost = "unix:///var/run/docker.sock"

// Process is the daemon as found in /proc, with what it takes to start it
// again the same way.
type Process struct {
	Pid int
	// Socket is the path of the API socket it was found by.
	Socket string
	// Exe is its binary; Args, Env and Dir are its command line (Args[0]
	// as it was started), environment and working directory.
	Exe  string
	Args []string
	Env  []string
	Dir  string
	// NetNS is the named network namespace (/run/netns/NAME) it runs in,
	// or "" when it runs in the test's own.
	NetNS    string
	children []int // e.g. the containerd it started itself
}

// String says how the daemon would be started again.
func (p Process) String() string {
	s := strings.TrimSpace(p.Exe + " " + strings.Join(p.Args[1:], " "))
	if p.NetNS != "" {
		s = "nsenter --net=" + p.NetNS + " -- " + s
	}
	return fmt.Sprintf("dockerd pid %d on %s, started as: %s", p.Pid, p.Socket, s)
}

// Find returns the dockerd process behind DOCKER_HOST (or the default
// socket) that a test may restart, or a reason it may not: it must be a
// plain process (not a systemd unit) that this test can signal, listening
// on a unix socket.
func Find() (Process, string) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = DefaultHost
	}
	sock, err := socketPath(host)
	if err != nil {
		return Process{}, err.Error()
	}
	return FindBySocket(sock)
}

func socketPath(host string) (string, error) {
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "unix" || u.Path == "" {
		return "", fmt.Errorf("docker host %q is not a unix socket: only a local daemon can be restarted", host)
	}
	return u.Path, nil
}

// FindBySocket returns the dockerd process listening on the unix socket
// at path; see [Find].
func FindBySocket(path string) (Process, string) {
	want, err := os.Stat(path)
	if err != nil {
		return Process{}, "no daemon socket: " + err.Error()
	}
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
		if !listensOn(pid, want) {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join(base, "cmdline"))
		environ, err2 := os.ReadFile(filepath.Join(base, "environ"))
		cwd, err3 := os.Readlink(filepath.Join(base, "cwd"))
		exe, err4 := os.Readlink(filepath.Join(base, "exe"))
		cg, _ := os.ReadFile(filepath.Join(base, "cgroup"))
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return Process{}, "cannot read dockerd's process: " + err.Error()
		}
		if bytes.Contains(cg, []byte(".service")) {
			return Process{}, "dockerd runs as a systemd service"
		}
		netns, why := netnsOf(pid)
		if why != "" {
			return Process{}, why
		}
		split := func(b []byte) []string { return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") }
		found = append(found, Process{Pid: pid, Socket: path, Exe: exe, Args: split(cmdline), Env: split(environ), Dir: cwd, NetNS: netns})
	}
	if len(found) != 1 {
		return Process{}, fmt.Sprintf("want one dockerd process listening on %s, found %d", path, len(found))
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

// listensOn reports whether pid holds a listening unix socket bound to the
// file want. /proc/PID/net/unix lists the sockets of pid's network
// namespace, with the path they were bound to; the process's descriptors
// say which of them it holds.
func listensOn(pid int, want os.FileInfo) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/unix")
	if err != nil {
		return false
	}
	defer f.Close()
	inodes := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path; flag 0x10000
		// is __SO_ACCEPTCON, a listening socket.
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[3] != "00010000" {
			continue
		}
		if fi, err := os.Stat(fields[7]); err == nil && os.SameFile(fi, want) {
			inodes["socket:["+fields[6]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); err == nil && inodes[l] {
			return true
		}
	}
	return false
}

// netnsOf returns "" when pid shares this process's network namespace,
// else the /run/netns entry naming pid's, or a reason it has none.
func netnsOf(pid int) (string, string) {
	own, err1 := os.Stat("/proc/self/ns/net")
	theirs, err2 := os.Stat("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err := errors.Join(err1, err2); err != nil {
		return "", "cannot read dockerd's network namespace: " + err.Error()
	}
	if os.SameFile(own, theirs) {
		return "", ""
	}
	named, _ := filepath.Glob("/run/netns/*")
	for _, p := range named {
		if fi, err := os.Stat(p); err == nil && os.SameFile(fi, theirs) {
			return p, ""
		}
	}
	return "", "dockerd runs in a network namespace without a name in /run/netns: it could not be started there again"
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

// Start launches dockerd again as it was started (command line,
// environment, working directory, network namespace), detached (it
// outlives the test), its output appended to a log file in the temporary
// directory. It first waits for the old daemon and its children to leave
// /proc: a killed daemon stays there as a zombie until its parent reaps
// it, and a new one refuses to start (pid file found) or waits for the old
// containerd.
func (p Process) Start() (int, error) {
	path := p.Exe
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("dockerd's binary: %w", err)
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
	cmd := exec.Command(path, p.Args[1:]...)
	cmd.Args[0] = p.Args[0] // as it was started
	if p.NetNS != "" {
		// nsenter enters the namespace and execs dockerd: same pid.
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return 0, fmt.Errorf("start dockerd in %s: %w", p.NetNS, err)
		}
		cmd = exec.Command(nsenter, append([]string{"--net=" + p.NetNS, "--", path}, p.Args[1:]...)...)
	}
	cmd.Env, cmd.Dir = p.Env, p.Dir
	if _, err := os.Stat(p.Dir); err != nil {
		// Its working directory is gone (/proc says "… (deleted)": a CI
		// checkout removed since): start it from the root rather than
		// fail with exec's misleading "no such file or directory".
		cmd.Dir = "/"
	}
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
