package console_test

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// proc is a running rtmanager process, its output kept.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// start runs bin with args and env (and nothing else of the test's
// environment but PATH, HOME and DOCKER_HOST), stopped with SIGTERM at
// cleanup.
func start(t *testing.T, name, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	if v := os.Getenv("DOCKER_HOST"); v != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+v)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within a minute of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

var consoleURLRE = regexp.MustCompile(`rtmanager console on (http://127\.0\.0\.1:\d+)`)

// startConsole runs `rtmanager console` on a free port and returns its URL.
func startConsole(t *testing.T, bin string, env map[string]string) (*proc, string) {
	t.Helper()
	p := start(t, "rtmanager console", bin, env, "console", "--console-addr", "127.0.0.1:0")
	var url string
	wait.For(t, time.Minute, "rtmanager console to print its URL", func() bool {
		if !p.alive() {
			t.Fatalf("rtmanager console exited:\n%s", p.output())
		}
		if m := consoleURLRE.FindStringSubmatch(p.output()); m != nil {
			url = m[1]
			return true
		}
		return false
	})
	return p, url
}
