package dockerd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFindTheDaemonBehindDockerHost finds the daemon the tests talk to (it
// does not stop it): the process found listens on DOCKER_HOST's socket, is
// named dockerd, and what it takes to start it again was read.
func TestFindTheDaemonBehindDockerHost(t *testing.T) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = DefaultHost
	}
	sock, err := socketPath(host)
	if err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(sock); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI has a Docker daemon, but: %v", err)
		}
		t.Skipf("no daemon: %v", err)
	}
	p, why := Find()
	if why != "" {
		if strings.Contains(why, "systemd") || strings.Contains(why, "signal") {
			t.Skip(why) // a daemon this test may not restart; nothing to check
		}
		t.Fatalf("Find: %s", why)
	}
	t.Log(p)
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
		t.Errorf("pid %d is %q (%v), want dockerd", p.Pid, comm, err)
	}
	want, _ := os.Stat(sock)
	if !listensOn(p.Pid, want) {
		t.Errorf("pid %d does not listen on %s", p.Pid, sock)
	}
	if p.Socket != sock || p.Exe == "" || len(p.Args) == 0 || len(p.Env) == 0 || p.Dir == "" {
		t.Errorf("incomplete restart knowledge: %+v", p)
	}
	if p.NetNS != "" {
		if _, err := os.Stat(p.NetNS); err != nil {
			t.Errorf("network namespace %s: %v", p.NetNS, err)
		}
		if !strings.Contains(p.String(), "nsenter --net="+p.NetNS) {
			t.Errorf("String() = %q does not say it enters %s", p.String(), p.NetNS)
		}
	}
}

// TestFindBySocketWantsDockerd: a listener that is not a dockerd (this test
// process) is not taken for the daemon.
func TestFindBySocketWantsDockerd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-docker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p, why := FindBySocket(path); why == "" || !strings.Contains(why, "found 0") {
		t.Errorf("FindBySocket(%s) = %+v, %q; want no dockerd found", path, p, why)
	}
	if _, why := FindBySocket(filepath.Join(t.TempDir(), "absent.sock")); !strings.Contains(why, "no daemon socket") {
		t.Errorf("absent socket: %q", why)
	}
}

func TestSocketPath(t *testing.T) {
	for host, want := range map[string]string{
		"unix:///var/run/docker.sock":         "/var/run/docker.sock",
		"unix:///run/rtm-docker-current.sock": "/run/rtm-docker-current.sock",
		"tcp://127.0.0.1:2375":                "",
		"unix://":                             "",
		"npipe:////./pipe/docker_engine":      "",
	} {
		got, err := socketPath(host)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("socketPath(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}

// TestStartFromAWorkingDirectoryThatIsGone: a daemon started from a
// directory removed since (a CI checkout deleted and cloned again) is
// started again from the root; exec would otherwise fail with "no such
// file or directory" for a binary that is there.
func TestStartFromAWorkingDirectoryThatIsGone(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "checkout")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// This test binary, run again with a filter that matches no test:
	// it exits at once.
	p := Process{Pid: 1 << 30, Exe: exe, Args: []string{exe, "-test.run=^$"}, Env: os.Environ(), Dir: gone + " (deleted)"}
	pid, err := p.Start()
	if err != nil {
		t.Fatalf("start from a working directory that is gone: %v", err)
	}
	if pid <= 0 {
		t.Fatalf("pid %d", pid)
	}
}
