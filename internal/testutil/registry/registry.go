// Package registry starts a real image registry for tests: Debian's
// docker-registry (distribution 2.8) on a free loopback port, with a
// temporary storage directory and a configuration file of its own, with or
// without htpasswd authentication. It is never run as a system service.
//
// Docker daemons treat registries on 127.0.0.0/8 as insecure (plain HTTP)
// by default, so no TLS is set up. The registry must be reachable from the
// daemon the tests talk to: when that daemon runs in a network namespace
// of its own (the current Docker of scripts/docker-current.sh), the
// registry is started in that namespace, on its loopback, and the test
// process reaches it there too (see [Registry.HTTPClient]).
//
// Images reach the registry through the daemon ([Registry.Push]), so a
// test pushes exactly what a Game Master's build pipeline would.
//
// When docker-registry (or htpasswd, for auth) is missing, tests skip —
// unless CI is set, where they fail: .ci/run installs both.
package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/testutil/dockerd"
)

// Binary is the registry's executable (Debian's docker-registry package).
const Binary = "docker-registry"

// Options configure [Start].
type Options struct {
	// Auth turns on htpasswd authentication with a generated user and
	// password ([Registry.User], [Registry.Password]).
	Auth bool
}

// Registry is a running registry server.
type Registry struct {
	// Host is "127.0.0.1:PORT": the registry part of image references.
	Host string
	// User and Password are the htpasswd credentials; empty without auth.
	User, Password string
	// NetNS is the network namespace it listens in ("" for the test's own).
	NetNS string

	t       testing.TB
	dir     string
	binary  string
	logPath string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// unavailable skips the test, or fails it under CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("a registry is required in CI: %s (apt-get install docker-registry apache2-utils)", msg)
		return
	}
	t.Skipf("registry not available: %s (apt-get install docker-registry apache2-utils)", msg)
}

// DaemonNetNS returns the named network namespace the Docker daemon
// behind DOCKER_HOST runs in, or "" when it shares the test's (or cannot
// be found as a local process: then the test's loopback is the best
// guess).
func DaemonNetNS() string {
	p, why := dockerd.Find()
	if why != "" {
		return ""
	}
	return p.NetNS
}

// Start starts a registry and stops it at cleanup.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		unavailable(t, "%s is not on PATH", Binary)
	}
	r := &Registry{t: t, dir: t.TempDir(), binary: bin, NetNS: DaemonNetNS()}
	r.logPath = filepath.Join(r.dir, "registry.log")

	// A free port in the namespace the registry will listen in; the
	// listener is closed just before the registry binds it.
	l, err := listenIn(r.NetNS, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registry: find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r.Host = "127.0.0.1:" + strconv.Itoa(port)

	auth := ""
	if opts.Auth {
		r.User, r.Password = "rtm-"+token(4), "pw-"+token(12)
		htpasswd, err := exec.LookPath("htpasswd")
		if err != nil {
			unavailable(t, "htpasswd is not on PATH")
		}
		out, err := exec.Command(htpasswd, "-Bbn", r.User, r.Password).Output()
		if err != nil {
			t.Fatalf("registry: htpasswd: %v", err)
		}
		path := filepath.Join(r.dir, "htpasswd")
		if err := os.WriteFile(path, bytes.TrimSpace(out), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: rtmanager-test\n    path: %s\n", path)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
%s`, filepath.Join(r.dir, "data"), r.Host, token(16), auth)
	if err := os.WriteFile(filepath.Join(r.dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	r.start()
	return r
}

// start runs the registry process and waits until it answers.
func (r *Registry) start() {
	t := r.t
	t.Helper()
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(r.binary, "serve", filepath.Join(r.dir, "config.yml"))
	if r.NetNS != "" {
		// nsenter joins the namespace and execs the registry: same pid.
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			t.Fatalf("registry: start in %s: %v", r.NetNS, err)
		}
		cmd = exec.Command(nsenter, "--net="+r.NetNS, "--", r.binary, "serve", filepath.Join(r.dir, "config.yml"))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a test's signals stay with the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("registry: start %s: %v", r.binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()

	hc := r.HTTPClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("registry exited at start (%v); its log:\n%s", err, r.Log())
		default:
		}
		resp, err := hc.Get("http://" + r.Host + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			// 200 without auth, 401 with: either way it serves.
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not answer on %s within 30s (last: %v); its log:\n%s", r.Host, err, r.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, with a deadline
	}
}

// Stop stops the registry (SIGTERM, then SIGKILL) and waits until it has
// gone; the storage is kept, so [Registry.Restart] serves the same images.
func (r *Registry) Stop() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for dockerd.Alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts a stopped registry again on the same port and storage.
func (r *Registry) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// Log returns what the registry has written so far.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// HTTPClient returns a client that reaches the registry from the test
// process, inside its network namespace when it has one.
func (r *Registry) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: dialIn(r.NetNS), DisableKeepAlives: true},
	}
}

// Listen listens on a free loopback port of the registry's network
// namespace, where the daemon can reach it: for tests that need an
// address that accepts connections and never answers, say.
func (r *Registry) Listen() (net.Listener, error) {
	return listenIn(r.NetNS, "127.0.0.1:0")
}

// ListenIn is [Registry.Listen] without a registry: a free loopback port
// in the daemon's network namespace.
func ListenIn(netns string) (net.Listener, error) {
	return listenIn(netns, "127.0.0.1:0")
}

// Ref returns the reference of repoTag ("galaxy/engine:1") on this
// registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// manifestAccept lists the manifest types a daemon pushes: Docker's and
// OCI's, single images and indexes.
const manifestAccept = "application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"

// ManifestDigest returns the digest the registry serves repo:tag under,
// ErrNoManifest when it has none.
func (r *Registry) ManifestDigest(ctx context.Context, repo, tag string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+r.Host+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", manifestAccept)
	if r.User != "" {
		req.SetBasicAuth(r.User, r.Password)
	}
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if d := resp.Header.Get("Docker-Content-Digest"); d != "" {
			return d, nil
		}
		return "", errors.New("registry sent no Docker-Content-Digest")
	case http.StatusNotFound:
		return "", ErrNoManifest
	}
	return "", errors.New("registry answered " + resp.Status)
}

// ErrNoManifest: the registry has no such manifest.
var ErrNoManifest = errors.New("no such manifest")

// HasManifest asks the registry whether it serves repo:tag.
func (r *Registry) HasManifest(ctx context.Context, repo, tag string) (bool, error) {
	_, err := r.ManifestDigest(ctx, repo, tag)
	if errors.Is(err, ErrNoManifest) {
		return false, nil
	}
	return err == nil, err
}

func token(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
