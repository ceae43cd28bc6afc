// Package dockertest connects tests to the real Docker daemon.
//
// When no daemon answers, tests are skipped — unless the environment
// variable CI is set, in which case they fail: CI always has Docker.
//
// Tests observe containers only through the Docker API; they never open
// connections to container addresses.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/engineimage"
)

// LabelTest is put on objects the helpers create outside the engine (e.g.
// unmanaged containers) so that cleanup finds them.
const LabelTest = "com.galaxy.rtmanager-test.id"

// ImageRepo is the repository of the test engine image.
const ImageRepo = "rtmanager-test-engine"

// unavailable stops the test when Docker is missing: Skip locally, Fatal
// in CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("docker is required in CI: %s", msg)
		return
	}
	t.Skipf("docker not available: %s", msg)
}

var (
	pingOnce sync.Once
	pingErr  error
)

// available pings the daemon once per test binary.
func available(t testing.TB) {
	t.Helper()
	pingOnce.Do(func() {
		d, err := engine.New(engine.Options{HostID: "dockertest-ping"})
		if err != nil {
			pingErr = err
			return
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pingErr = d.Ping(ctx)
	})
	if pingErr != nil {
		unavailable(t, "%v", pingErr)
	}
}

// Client returns a raw moby client for the daemon (DOCKER_HOST or the
// default socket), closed at cleanup. Use it only to set up situations the
// engine must not create itself, such as unmanaged containers.
func Client(t testing.TB) *client.Client {
	t.Helper()
	available(t)
	cli, err := client.New(client.FromEnv)
	if err != nil {
		unavailable(t, "new client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Engine returns an engine for hostID, closed at cleanup, after checking
// that the daemon answers. Every container and network labelled with
// hostID is removed at cleanup (registered before the caller's own
// cleanups, so it runs after them).
func Engine(t testing.TB, hostID string) *engine.Docker {
	t.Helper()
	return EngineWith(t, engine.Options{HostID: hostID})
}

// EngineWith is Engine with options of the test's own (opts.HostID is
// required).
func EngineWith(t testing.TB, opts engine.Options) *engine.Docker {
	t.Helper()
	available(t)
	hostID := opts.HostID
	d, err := engine.New(opts)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	RemoveLabelled(t, engine.LabelHost, hostID)
	return d
}

// UniqueName returns a lowercase Docker-safe name derived from t.Name()
// with a random suffix, so reruns and parallel tests do not collide.
func UniqueName(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-.")
	if len(base) > 40 {
		base = base[len(base)-40:]
		base = strings.TrimLeft(base, "-._")
	}
	if base == "" {
		base = "test"
	}
	return base + "-" + hex.EncodeToString(b[:])
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_.-]+`)

var (
	imageOnce sync.Once
	imageRef  string
	imageErr  error
)

// EngineImage builds the test engine image (once per test binary) and
// returns its reference, "rtmanager-test-engine:<hash>".
func EngineImage(t testing.TB) string {
	t.Helper()
	available(t)
	imageOnce.Do(func() {
		d, err := engine.New(engine.Options{HostID: "dockertest-image"})
		if err != nil {
			imageErr = err
			return
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		imageRef, imageErr = engineimage.Build(ctx, d, ImageRepo)
	})
	if imageErr != nil {
		t.Fatalf("build test engine image: %v", imageErr)
	}
	return imageRef
}

// RemoveLabelled removes, at cleanup, every container (force) and network
// carrying label key=value.
func RemoveLabelled(t testing.TB, key, value string) {
	t.Helper()
	cli := Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f := make(client.Filters).Add("label", key+"="+value)
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Errorf("cleanup: list containers %s=%s: %v", key, value, err)
			return
		}
		for _, c := range cs.Items {
			_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !isGone(err) {
				t.Errorf("cleanup: remove container %s: %v", c.ID, err)
			}
		}
		ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
		if err != nil {
			t.Errorf("cleanup: list networks %s=%s: %v", key, value, err)
			return
		}
		for _, n := range ns.Items {
			if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !isGone(err) {
				t.Errorf("cleanup: remove network %s: %v", n.Name, err)
			}
		}
	})
}

func isGone(err error) bool {
	var nf interface{ NotFound() }
	return errors.As(err, &nf) || strings.Contains(err.Error(), "No such") ||
		strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "already in progress")
}

// CreateUnmanaged creates (not starts) a container with plain SDK calls —
// not through the engine — with the given name, image and labels plus
// LabelTest, removed at cleanup. It returns the container id.
func CreateUnmanaged(t testing.TB, name, image string, labels map[string]string) string {
	t.Helper()
	cli := Client(t)
	testID := UniqueName(t)
	all := map[string]string{LabelTest: testID}
	for k, v := range labels {
		all[k] = v
	}
	RemoveLabelled(t, LabelTest, testID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   name,
		Config: &container.Config{Image: image, Labels: all},
		HostConfig: &container.HostConfig{
			CapDrop:     []string{"ALL"},
			SecurityOpt: []string{"no-new-privileges"},
		},
	})
	if err != nil {
		t.Fatalf("create unmanaged container %s: %v", name, err)
	}
	return res.ID
}

// UniqueImage imports an image of its own as ref: a root filesystem with
// one file of size random bytes (so its layer is like no other) and the
// test engine's command, which it cannot run. It is removed at cleanup,
// with every tag it has by then. For tests that need an image no other
// test shares: pulled cold, collected, or counted.
func UniqueImage(t testing.TB, ref string, size int) string {
	t.Helper()
	d := Engine(t, "dockertest-unique")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if err := tw.WriteHeader(&tar.Header{Name: "random", Mode: 0o644, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.ImportImage(ctx, ref, &buf, []string{`CMD ["/engine"]`}); err != nil {
		t.Fatalf("import unique image %s: %v", ref, err)
	}
	cli := Client(t)
	res, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("inspect unique image %s: %v", ref, err)
	}
	id := res.ID
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !isGone(err) {
			t.Errorf("cleanup: remove image %s (%s): %v", ref, id, err)
		}
	})
	return id
}

// EngineImageVariant imports the test engine as ref with a label of its
// own: it runs like EngineImage but is another image (another id and
// digest). It is removed at cleanup, with every tag it has by then. Call
// it before creating the containers that use it, so that its cleanup
// runs after theirs.
func EngineImageVariant(t testing.TB, ref string) string {
	return EngineImageVariantPadded(t, ref, 0)
}

// EngineImageHealthy is EngineImageVariant whose image declares the
// engine's HEALTHCHECK (engineimage.HealthcheckChange).
func EngineImageHealthy(t testing.TB, ref string) string {
	t.Helper()
	d := Engine(t, "dockertest-variant")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := engineimage.BuildVariantHealthy(ctx, d, ref, "com.galaxy.rtmanager-test.variant="+UniqueName(t)); err != nil {
		t.Fatalf("build engine image with a health check %s: %v", ref, err)
	}
	cli := Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true})
	})
	return ref
}

// EngineImageVariantPadded is EngineImageVariant whose layer also holds
// padding random bytes: it shares no layer with any other image, so a
// pull of it downloads everything.
func EngineImageVariantPadded(t testing.TB, ref string, padding int) string {
	t.Helper()
	d := Engine(t, "dockertest-variant")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := engineimage.BuildVariant(ctx, d, ref, "com.galaxy.rtmanager-test.variant="+UniqueName(t), padding); err != nil {
		t.Fatalf("build engine image variant %s: %v", ref, err)
	}
	cli := Client(t)
	res, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("inspect engine image variant %s: %v", ref, err)
	}
	id := res.ID
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The image is the test's own: so are the containers of it that
		// the test's other cleanups have not removed yet.
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("ancestor", id)})
		if err == nil {
			for _, c := range cs.Items {
				_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
			}
		}
		if _, err := cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true}); err != nil && !isGone(err) {
			t.Errorf("cleanup: remove image %s (%s): %v", ref, id, err)
		}
	})
	return id
}
