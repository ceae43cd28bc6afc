package engineimage_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/engineimage"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// fakeImporter records imports in memory.
type fakeImporter struct {
	mu      sync.Mutex
	images  map[string]map[string]string
	imports []string
	files   map[string]*tar.Header
	changes []string
}

func (f *fakeImporter) ImageLabels(_ context.Context, ref string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.images[ref]
	if !ok {
		return nil, fmt.Errorf("inspect image %s: %w", ref, engine.ErrNotFound)
	}
	return l, nil
}

func (f *fakeImporter) ImportImage(_ context.Context, ref string, rootfs io.Reader, changes []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imports = append(f.imports, ref)
	f.changes = changes
	f.files = map[string]*tar.Header{}
	tr := tar.NewReader(rootfs)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		f.files[h.Name] = h
	}
	labels := map[string]string{}
	for _, c := range changes {
		if kv, ok := strings.CutPrefix(c, "LABEL "); ok {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
	}
	if f.images == nil {
		f.images = map[string]map[string]string{}
	}
	f.images[ref] = labels
	return nil
}

func TestBuildIsIdempotent(t *testing.T) {
	ctx := t.Context()
	bin, err := engineimage.Compile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	hash := hex.EncodeToString(sum[:])

	f := &fakeImporter{}
	ref, err := engineimage.Build(ctx, f, "example.com:5000/team/engine")
	if err != nil {
		t.Fatal(err)
	}
	if want := "example.com:5000/team/engine:" + hash[:16]; ref != want {
		t.Errorf("ref = %s, want %s (tag from the binary's hash)", ref, want)
	}
	if h := f.files["engine"]; h == nil || h.Mode&0o111 == 0 || h.Size != int64(len(bin)) {
		t.Errorf("tar entry engine = %+v", h)
	}
	for _, want := range []string{`CMD ["/engine"]`, "EXPOSE 8080/tcp", "LABEL " + engineimage.LabelContentHash + "=" + hash} {
		if !strings.Contains(strings.Join(f.changes, "\n"), want) {
			t.Errorf("changes %q lack %q", f.changes, want)
		}
	}

	// Again: same binary, no import. A fixed tag works the same way.
	if ref2, err := engineimage.Build(ctx, f, "example.com:5000/team/engine"); err != nil || ref2 != ref {
		t.Fatalf("second Build = %s, %v", ref2, err)
	}
	if len(f.imports) != 1 {
		t.Errorf("imports = %v, want one", f.imports)
	}
	for range 2 {
		if ref3, err := engineimage.Build(ctx, f, "galaxy-engine:dev"); err != nil || ref3 != "galaxy-engine:dev" {
			t.Fatalf("Build with tag = %s, %v", ref3, err)
		}
	}
	if len(f.imports) != 2 {
		t.Errorf("imports = %v, want two", f.imports)
	}
	// A fixed tag holding another binary is replaced.
	f.images["galaxy-engine:dev"][engineimage.LabelContentHash] = "stale"
	if _, err := engineimage.Build(ctx, f, "galaxy-engine:dev"); err != nil {
		t.Fatal(err)
	}
	if len(f.imports) != 3 {
		t.Errorf("imports = %v, want three", f.imports)
	}
}

// countingImporter counts imports into the real daemon.
type countingImporter struct {
	engineimage.Importer
	imports int
}

func (c *countingImporter) ImportImage(ctx context.Context, ref string, rootfs io.Reader, changes []string) error {
	c.imports++
	return c.Importer.ImportImage(ctx, ref, rootfs, changes)
}

func TestBuildIntoDaemon(t *testing.T) {
	d := dockertest.Engine(t, dockertest.UniqueName(t))
	raw := dockertest.Client(t)
	ctx := t.Context()
	ref := "rtmanager-test-engineimage:" + dockertest.UniqueName(t)
	t.Cleanup(func() {
		_, _ = raw.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
	})

	imp := &countingImporter{Importer: d}
	for range 2 {
		got, err := engineimage.Build(ctx, imp, ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != ref {
			t.Errorf("Build = %s, want %s", got, ref)
		}
	}
	if imp.imports != 1 {
		t.Errorf("imports = %d, want 1 (the second Build finds the image)", imp.imports)
	}
	img, err := raw.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	cfg := img.Config
	if cfg == nil || strings.Join(cfg.Cmd, " ") != "/engine" || len(cfg.ExposedPorts) != 1 || cfg.Labels[engineimage.LabelContentHash] == "" {
		t.Errorf("image config = %+v", cfg)
	}
	if img.Os != "linux" {
		t.Errorf("image os = %q", img.Os)
	}
}
