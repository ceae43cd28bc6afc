package engine_test

// Pulls from a real registry on loopback (internal/testutil/registry).

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// pullEngine is an engine with its own Docker config directory and quick
// retries.
func pullEngine(t *testing.T, configDir string, opts engine.Options) *engine.Docker {
	t.Helper()
	opts.HostID = dockertest.UniqueName(t)
	opts.DockerConfigDir = configDir
	if opts.PullBackoff == 0 {
		opts.PullBackoff = 100 * time.Millisecond
	}
	return dockertest.EngineWith(t, opts)
}

// dockerConfig writes config.json into a new directory and returns it.
func dockerConfig(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func authsFor(r *registry.Registry, user, pass string) string {
	return `{"auths": {"` + r.Host + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
}

// pushUnique pushes an image no other test has to r as repoTag and removes
// it locally, so that using it means a cold pull. It returns the
// reference and the registry's digest.
func pushUnique(t *testing.T, r *registry.Registry, repoTag string) (string, string) {
	t.Helper()
	cli := dockertest.Client(t)
	src := "rtmanager-test-unique:" + dockertest.UniqueName(t)
	id := dockertest.UniqueImage(t, src, 256<<10)
	ref, digest := r.Push(t, cli, src, repoTag)
	if _, err := cli.ImageRemove(t.Context(), id, client.ImageRemoveOptions{Force: true}); err != nil {
		t.Fatalf("remove the pushed image locally: %v", err)
	}
	t.Cleanup(func() { removeImage(t, ref) })
	return ref, digest
}

func removeImage(t *testing.T, ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = dockertest.Client(t).ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true})
}

func TestAlwaysPull(t *testing.T) {
	for ref, want := range map[string]bool{
		"galaxy/engine":         true,
		"galaxy/engine:latest":  true,
		"127.0.0.1:5000/engine": true,
		"galaxy/engine:1.4":     false,
		"galaxy/engine@sha256:" + strings.Repeat("a", 64):        false,
		"galaxy/engine:latest@sha256:" + strings.Repeat("a", 64): false,
	} {
		if got := engine.AlwaysPull(ref); got != want {
			t.Errorf("AlwaysPull(%s) = %v, want %v", ref, got, want)
		}
	}
}

// A cold pull, anonymous and with htpasswd credentials from config.json:
// the image arrives with the registry's digest and the pull's bytes; the
// next call finds it and does not pull.
func TestPullFromRegistry(t *testing.T) {
	t.Parallel()
	for _, auth := range []bool{false, true} {
		t.Run(map[bool]string{false: "anonymous", true: "htpasswd"}[auth], func(t *testing.T) {
			t.Parallel()
			r := registry.Start(t, registry.Options{Auth: auth})
			ref, digest := pushUnique(t, r, "galaxy/engine:cold")
			cfg := dockerConfig(t, `{}`)
			if auth {
				cfg = dockerConfig(t, authsFor(r, r.User, r.Password))
			}
			d := pullEngine(t, cfg, engine.Options{})
			img, err := d.EnsureImage(t.Context(), ref)
			if err != nil {
				t.Fatalf("EnsureImage(%s): %v; registry log:\n%s", ref, err, r.Log())
			}
			if !img.Pull.Pulled || img.Pull.Shared || img.Pull.Attempts != 1 || img.Digest != digest || img.ID == "" {
				t.Fatalf("EnsureImage = %+v; want one pull of digest %s", img, digest)
			}
			if img.Pull.Bytes <= 0 || img.Pull.Duration <= 0 {
				t.Errorf("pull stats %+v: want the bytes and the time of the layer download", img.Pull)
			}
			again, err := d.EnsureImage(t.Context(), ref)
			if err != nil || again.Pull.Pulled || again.Digest != digest || again.ID != img.ID {
				t.Fatalf("EnsureImage again = %+v, %v; want the local image, no pull", again, err)
			}
			// By digest: the same bits, known without asking the registry.
			pinned := r.Ref("galaxy/engine@" + digest)
			byDigest, err := d.EnsureImage(t.Context(), pinned)
			if err != nil || byDigest.Digest != digest || byDigest.ID != img.ID {
				t.Fatalf("EnsureImage(%s) = %+v, %v", pinned, byDigest, err)
			}
		})
	}
}

// Not parallel: the credential helper is on PATH for this test only.
func TestPullThroughCredentialHelper(t *testing.T) {
	r := registry.Start(t, registry.Options{Auth: true})
	ref, digest := pushUnique(t, r, "galaxy/engine:helped")
	helper := registry.InstallCredentialHelper(t, "rtmtest", r.Host, r.User, r.Password)
	for name, cfg := range map[string]string{
		"credHelpers": `{"credHelpers": {"` + r.Host + `": "rtmtest"}}`,
		"credsStore":  `{"credsStore": "rtmtest"}`,
	} {
		removeImage(t, ref)
		d := pullEngine(t, dockerConfig(t, cfg), engine.Options{})
		img, err := d.EnsureImage(t.Context(), ref)
		if err != nil || !img.Pull.Pulled || img.Digest != digest {
			t.Fatalf("%s: EnsureImage = %+v, %v; registry log:\n%s", name, img, err, r.Log())
		}
		if !strings.Contains(helper.CallLog(), "get "+r.Host) {
			t.Fatalf("%s: the helper was not asked: %q", name, helper.CallLog())
		}
	}
}

// Not found and unauthorized fail at once (one request, a sentinel the
// executor makes permanent); the errors name no credential.
func TestPullErrorsAreClassified(t *testing.T) {
	t.Parallel()
	open := registry.Start(t, registry.Options{})
	locked := registry.Start(t, registry.Options{Auth: true})
	ref, _ := pushUnique(t, locked, "galaxy/engine:locked")
	const wrong = "wrong-password-never-shown"
	for _, tc := range []struct {
		name, cfg, ref string
		want           error
	}{
		{"missing tag", `{}`, open.Ref("galaxy/engine:nope"), engine.ErrImageNotFound},
		{"missing repository", `{}`, open.Ref("no/such/repo:1"), engine.ErrImageNotFound},
		{"no credentials", `{}`, ref, engine.ErrRegistryAuth},
		{"wrong password", authsFor(locked, locked.User, wrong), ref, engine.ErrRegistryAuth},
		{"unknown user", authsFor(locked, "nobody-"+locked.User, wrong), ref, engine.ErrRegistryAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := pullEngine(t, dockerConfig(t, tc.cfg), engine.Options{})
			img, err := d.EnsureImage(t.Context(), tc.ref)
			if !errors.Is(err, tc.want) {
				t.Fatalf("EnsureImage(%s) = %v, want %v", tc.ref, err, tc.want)
			}
			if img.Pull.Attempts != 1 || engine.PullRequests(d) != 1 {
				t.Errorf("%d attempts, %d requests: want exactly one", img.Pull.Attempts, engine.PullRequests(d))
			}
			for _, secret := range []string{wrong, locked.Password, base64.StdEncoding.EncodeToString([]byte(locked.User + ":" + wrong))} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows a credential: %v", err)
				}
			}
			t.Logf("%v", err)
		})
	}
}

// A registry that is down is tried again with backoff; when it comes back
// within the attempts the pull succeeds.
func TestPullRetriesWhileRegistryIsDown(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	ref, digest := pushUnique(t, r, "galaxy/engine:flaky")
	r.Stop()

	// Down for good: every attempt is made, and the error is transient.
	d := pullEngine(t, dockerConfig(t, `{}`), engine.Options{PullAttempts: 2, PullBackoff: 10 * time.Millisecond})
	img, err := d.EnsureImage(t.Context(), ref)
	if err == nil || errors.Is(err, engine.ErrImageNotFound) || errors.Is(err, engine.ErrRegistryAuth) || img.Pull.Attempts != 2 {
		t.Fatalf("EnsureImage with the registry down = %+v, %v; want 2 attempts and a transient error", img.Pull, err)
	}

	// Back after the first attempt: the second one gets the image.
	d = pullEngine(t, dockerConfig(t, `{}`), engine.Options{PullAttempts: 10, PullBackoff: 300 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		img, err = d.EnsureImage(context.Background(), ref)
	}()
	wait.For(t, time.Minute, "the first pull attempt", func() bool { return engine.PullRequests(d) >= 1 })
	r.Restart()
	<-done
	if err != nil || img.Digest != digest || img.Pull.Attempts < 2 {
		t.Fatalf("EnsureImage across the registry's restart = %+v, %v; want the image after 2 or more attempts", img, err)
	}
}

// A registry that accepts connections and never answers: the pull stops
// at its timeout with ErrPullTimeout.
func TestPullTimeout(t *testing.T) {
	t.Parallel()
	l, err := registry.ListenIn(registry.DaemonNetNS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() }) // never accepted: the kernel's backlog holds the connections
	ref := l.Addr().String() + "/galaxy/engine:slow"
	d := pullEngine(t, dockerConfig(t, `{}`), engine.Options{PullTimeout: 2 * time.Second, PullAttempts: 2})
	img, err := d.EnsureImage(t.Context(), ref)
	if !errors.Is(err, engine.ErrPullTimeout) {
		t.Fatalf("EnsureImage from a silent registry = %+v, %v; want ErrPullTimeout", img.Pull, err)
	}
}

// Concurrent callers of one reference share one pull.
func TestConcurrentPullsAreShared(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	ref, digest := pushUnique(t, r, "galaxy/engine:shared")
	d := pullEngine(t, dockerConfig(t, `{}`), engine.Options{})
	const callers = 5
	var joined atomic.Int32
	release := make(chan struct{})
	engine.SetPullHooks(d, func() { joined.Add(1) }, func() { <-release })

	var wg sync.WaitGroup
	imgs := make([]engine.Image, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { imgs[i], errs[i] = d.EnsureImage(context.Background(), ref) })
	}
	// The first pull waits until every caller has joined it.
	wait.For(t, time.Minute, "every caller to wait for the pull", func() bool { return joined.Load() == callers })
	close(release)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || imgs[i].Digest != digest || !imgs[i].Pull.Shared {
			t.Fatalf("caller %d: %+v, %v; want the shared pull's image", i, imgs[i], errs[i])
		}
	}
	if n := engine.PullRequests(d); n != 1 {
		t.Fatalf("%d pull requests for %d concurrent callers, want 1", n, callers)
	}
}
