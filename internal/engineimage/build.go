// Package engineimage builds the stand-in game engine image (the program in
// ./engine) without a registry, a Dockerfile or `docker build`: it compiles
// the program with `CGO_ENABLED=0 go build`, tars the static binary as
// /engine and imports the tarball into the daemon with CMD ["/engine"] and
// EXPOSE 8080.
//
// The program's source is embedded in this package, so Build works from any
// working directory (tests, `rtmanager dev`, `make demo`); it needs a Go
// toolchain on PATH. It does not depend on package testing.
package engineimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
)

// DefaultRepo is the repository used for the engine image when the caller
// has no preference.
const DefaultRepo = "rtmanager-engine"

// LabelContentHash is the image label holding the SHA-256 of the engine
// binary inside the image.
const LabelContentHash = "com.galaxy.rtmanager.engineimage.sha256"

// Port is the TCP port the engine serves HTTP on.
const Port = 8080

//go:embed engine/main.go
var mainSource []byte

// Importer is what Build needs from the Docker daemon; *engine.Docker
// implements it.
type Importer interface {
	// ImageLabels returns the labels of a local image, or an error wrapping
	// engine.ErrNotFound when the daemon does not have it.
	ImageLabels(ctx context.Context, ref string) (map[string]string, error)
	// ImportImage creates image ref from a root filesystem tarball.
	ImportImage(ctx context.Context, ref string, rootfs io.Reader, changes []string) error
}

var _ Importer = (*engine.Docker)(nil)

// Build compiles the engine and makes sure the daemon has it as an image;
// it returns the image reference.
//
// If ref has no tag (e.g. "rtmanager-engine"), the tag is the first 16 hex
// digits of the binary's SHA-256, so a changed program gets a new image. If
// ref has a tag it is used as is. Either way, when the image already
// exists with the same binary (label LabelContentHash) nothing is imported:
// a repeated Build costs one (cached) compile and one inspect.
func Build(ctx context.Context, imp Importer, ref string) (string, error) {
	if ref == "" {
		ref = DefaultRepo
	}
	bin, err := Compile(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	hash := hex.EncodeToString(sum[:])
	if !hasTag(ref) {
		ref = ref + ":" + hash[:16]
	}

	labels, err := imp.ImageLabels(ctx, ref)
	switch {
	case err == nil && labels[LabelContentHash] == hash:
		return ref, nil
	case err != nil && !errors.Is(err, engine.ErrNotFound):
		return "", fmt.Errorf("build engine image %s: %w", ref, err)
	}

	rootfs, err := rootfsTar(bin, nil)
	if err != nil {
		return "", fmt.Errorf("build engine image %s: %w", ref, err)
	}
	changes := []string{
		`CMD ["/engine"]`,
		fmt.Sprintf("EXPOSE %d/tcp", Port),
		fmt.Sprintf("LABEL %s=%s", LabelContentHash, hash),
	}
	if err := imp.ImportImage(ctx, ref, bytes.NewReader(rootfs), changes); err != nil {
		return "", fmt.Errorf("build engine image %s: %w", ref, err)
	}
	labels, err = imp.ImageLabels(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("build engine image %s: after import: %w", ref, err)
	}
	if labels[LabelContentHash] != hash {
		return "", fmt.Errorf("build engine image %s: imported image lacks label %s=%s", ref, LabelContentHash, hash)
	}
	return ref, nil
}

// HealthcheckChange is the HEALTHCHECK of the image BuildVariantHealthy
// imports: the engine's own check, every 200 ms, unhealthy after two
// failures.
const HealthcheckChange = `HEALTHCHECK --interval=200ms --timeout=5s --retries=2 CMD ["/engine", "healthcheck"]`

// BuildVariantHealthy is BuildVariant whose image also declares
// HealthcheckChange (through the import's --change, as `docker import
// --change` does).
func BuildVariantHealthy(ctx context.Context, imp Importer, ref, label string) error {
	return buildVariant(ctx, imp, ref, label, 0, HealthcheckChange)
}

// BuildVariant imports the engine as ref with one more label ("k=v"): an
// image that runs the same program but is another image, with an id and
// a registry digest of its own, for tests of image changes and pulls.
// With padding > 0 its layer also holds /padding, that many random bytes,
// so that it shares no layer with any other image (a pull of it is
// cold). It imports every time.
func BuildVariant(ctx context.Context, imp Importer, ref, label string, padding int) error {
	return buildVariant(ctx, imp, ref, label, padding)
}

func buildVariant(ctx context.Context, imp Importer, ref, label string, padding int, extra ...string) error {
	bin, err := Compile(ctx)
	if err != nil {
		return err
	}
	var pad []byte
	if padding > 0 {
		pad = make([]byte, padding)
		_, _ = rand.Read(pad)
	}
	rootfs, err := rootfsTar(bin, pad)
	if err != nil {
		return fmt.Errorf("build engine image %s: %w", ref, err)
	}
	changes := append([]string{`CMD ["/engine"]`, fmt.Sprintf("EXPOSE %d/tcp", Port), "LABEL " + label}, extra...)
	if err := imp.ImportImage(ctx, ref, bytes.NewReader(rootfs), changes); err != nil {
		return fmt.Errorf("build engine image %s: %w", ref, err)
	}
	return nil
}

// hasTag reports whether ref names a tag or digest (a ':' or '@' after the
// last '/', so that a registry port is not mistaken for a tag).
func hasTag(ref string) bool {
	last := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ContainsAny(last, ":@")
}

// Compile builds the engine program as a static linux binary for the
// machine's architecture and returns it. The build is reproducible
// (-trimpath, no VCS stamping), so an unchanged program gives the same
// bytes.
func Compile(ctx context.Context) ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("compile engine: go toolchain not found on PATH: %w", err)
	}
	src, err := sourceDir()
	if err != nil {
		return nil, fmt.Errorf("compile engine: %w", err)
	}
	out, err := os.MkdirTemp("", "rtmanager-engine-bin-")
	if err != nil {
		return nil, fmt.Errorf("compile engine: %w", err)
	}
	defer os.RemoveAll(out)
	binPath := filepath.Join(out, "engine")

	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0",
		"GOOS=linux",
		"GOARCH="+runtime.GOARCH,
		"GOWORK=off",
		"GOFLAGS=-buildvcs=false",
		"GOTOOLCHAIN=local",
	)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("compile engine: go build: %w\n%s", err, stderr.Bytes())
	}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, fmt.Errorf("compile engine: %w", err)
	}
	return bin, nil
}

const goMod = "module rtmanager-engine\n\ngo 1.22\n"

// sourceDir writes the embedded program into a directory of its own, a
// stable one under the user cache dir when possible (so the Go build cache
// is hit), keyed by the source hash.
func sourceDir() (string, error) {
	sum := sha256.Sum256(append([]byte(goMod), mainSource...))
	key := hex.EncodeToString(sum[:8])
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "rtmanager", "engineimage-src", key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for name, content := range map[string][]byte{"go.mod": []byte(goMod), "main.go": mainSource} {
		p := filepath.Join(dir, name)
		if have, err := os.ReadFile(p); err == nil && bytes.Equal(have, content) {
			continue
		}
		// Write then rename so a concurrent builder never sees half a file.
		tmp, err := os.CreateTemp(dir, name+".tmp-")
		if err != nil {
			return "", err
		}
		_, werr := tmp.Write(content)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(tmp.Name())
			return "", err
		}
		if err := os.Rename(tmp.Name(), p); err != nil {
			os.Remove(tmp.Name())
			return "", err
		}
	}
	return dir, nil
}

// rootfsTar returns a tarball holding /engine, an empty /state and a /tmp,
// and /padding when pad is not empty.
func rootfsTar(bin, pad []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	type entry struct {
		h    tar.Header
		data []byte
	}
	entries := []entry{
		{h: tar.Header{Name: "state/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{h: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
		{h: tar.Header{Name: "engine", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, data: bin},
	}
	if len(pad) > 0 {
		entries = append(entries, entry{h: tar.Header{Name: "padding", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(pad))}, data: pad})
	}
	for _, e := range entries {
		h := e.h
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
