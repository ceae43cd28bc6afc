package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Pull defaults; see Options.
const (
	DefaultPullTimeout  = 10 * time.Minute
	DefaultPullAttempts = 3
)

// Image is a local image as a job uses it.
type Image struct {
	// Ref is the reference asked for.
	Ref string
	// ID is the daemon's image id ("sha256:…").
	ID string
	// Digest is the manifest digest ("sha256:…") under which the
	// registry of Ref's repository serves this image, so that
	// "<repository>@<digest>" names exactly these bits. Empty for an image
	// that never came from (or went to) a registry, such as one built or
	// imported locally.
	Digest string
	// Size is the image's size on disk as the daemon reports it.
	Size int64
	// Pull says what the pull that made the image present did; zero when
	// the image was there and no pull was needed.
	Pull PullStats
}

// PullStats describes one pull.
type PullStats struct {
	// Pulled reports that a pull ran (for this call or shared with
	// another caller).
	Pulled bool
	// Shared reports that the pull was started by another caller and
	// this one waited for it.
	Shared bool
	// Bytes is what the layers to download weighed (layers already
	// present count nothing), as the daemon's progress reported it; when
	// it reports no sizes (the containerd image store does not for small
	// layers) and layers were fetched, the image's size.
	Bytes int64
	// Layers counts the layers the pull fetched.
	Layers int
	// Duration is the pull's wall time, retries included.
	Duration time.Duration
	// Attempts counts the pull requests sent to the daemon.
	Attempts int
}

// AlwaysPull reports whether ref is pulled even when the daemon has it:
// "latest", written or implied, is the one tag everyone moves, so it is
// pulled every time (Kubernetes' rule for imagePullPolicy). Any other tag
// is taken as immutable and pulled only when missing; a digest always is.
// Publish each engine build under a tag of its own, or pin it by digest.
func AlwaysPull(ref string) bool {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return false
	}
	if _, ok := named.(reference.Digested); ok {
		return false
	}
	t, ok := reference.TagNameOnly(named).(reference.Tagged)
	return ok && t.Tag() == "latest"
}

// EnsureImage implements Engine: it pulls ref when the daemon does not
// have it (or always, for "latest": see AlwaysPull) and returns the local
// image with its registry digest.
//
// Concurrent calls for the same reference share one pull; each caller
// still waits only as long as its own context allows. A pull is bounded
// by Options.PullTimeout and tried up to Options.PullAttempts times with
// backoff while the registry is unreachable, slow or failing; an image
// the registry does not have ([ErrImageNotFound]) or refuses to serve
// with the credentials at hand ([ErrRegistryAuth]) fails at once.
// Credentials come from the Docker CLI's configuration (see
// [Docker.RegistryAuth]) and appear in no error.
func (d *Docker) EnsureImage(ctx context.Context, ref string) (Image, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return Image{}, fmt.Errorf("pull image %s: %w: %w", ref, ErrInvalidSpec, err)
	}
	cacheable := !AlwaysPull(ref)
	gen := d.images.generation()
	if cacheable {
		if img, ok := d.images.get(ref); ok {
			return img, nil
		}
		img, err := d.inspectImage(ctx, ref, named)
		if err == nil {
			d.images.put(gen, ref, img)
		}
		if err == nil || !errors.Is(err, ErrNotFound) {
			return img, err
		}
	}
	key := reference.TagNameOnly(named).String()
	ch := d.pulls.DoChan(key, func() (any, error) {
		if d.testHookPulling != nil {
			d.testHookPulling()
		}
		// The pull outlives a caller that gives up: the others may
		// still wait for it, and the image is wanted anyway.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.pullTimeout)
		defer cancel()
		return d.pull(pctx, ref)
	})
	if d.testHookJoined != nil {
		d.testHookJoined()
	}
	var stats PullStats
	select {
	case <-ctx.Done():
		return Image{}, fmt.Errorf("pull image %s: %w", ref, context.Cause(ctx))
	case res := <-ch:
		if res.Val != nil {
			stats = res.Val.(PullStats)
		}
		stats.Shared = res.Shared
		if res.Err != nil {
			return Image{Ref: ref, Pull: stats}, res.Err
		}
	}
	img, err := d.inspectImage(ctx, ref, named)
	if err != nil {
		return Image{}, fmt.Errorf("inspect image %s after its pull: %w", ref, err)
	}
	if cacheable {
		d.images.put(gen, ref, img)
	}
	if stats.Bytes == 0 && stats.Layers > 0 {
		stats.Bytes = img.Size
	}
	img.Pull = stats
	return img, nil
}

// imageCache holds the images EnsureImage found present, by reference,
// so that a job whose image is known pays for no image request. Only
// references that are not pulled every time are kept ("latest" always
// is: see AlwaysPull). It is emptied when an image goes: by the engine's
// own RemoveImage (image garbage collection), and when a create finds
// the image missing (removed by someone else), so the job pulls it
// again. A removal while a lookup is under way bumps the generation, and
// the lookup's result is not kept.
type imageCache struct {
	mu    sync.Mutex
	gen   uint64
	byRef map[string]Image
}

func (c *imageCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *imageCache) get(ref string) (Image, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img, ok := c.byRef[ref]
	return img, ok
}

// put keeps img for ref unless images were forgotten since gen.
func (c *imageCache) put(gen uint64, ref string, img Image) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.byRef == nil {
		c.byRef = map[string]Image{}
	}
	img.Pull = PullStats{}
	c.byRef[ref] = img
}

// forgetImages empties the image cache.
func (d *Docker) forgetImages() {
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	d.images.gen++
	clear(d.images.byRef)
}

// imageGone reports whether the daemon refused a create because it does
// not have the image.
func imageGone(err error) bool {
	return cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "no such image")
}

// inspectImage returns the local image of ref, ErrNotFound when missing.
func (d *Docker) inspectImage(ctx context.Context, ref string, named reference.Named) (Image, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return Image{}, fmt.Errorf("inspect image %s: %w", ref, mapErr(err))
	}
	return Image{Ref: ref, ID: res.ID, Digest: repoDigest(res.RepoDigests, named), Size: res.Size}, nil
}

// repoDigest picks, from an image's "repository@digest" list, the digest
// of named's repository.
func repoDigest(repoDigests []string, named reference.Named) string {
	if d, ok := named.(reference.Digested); ok {
		return d.Digest().String()
	}
	for _, rd := range repoDigests {
		n, err := reference.ParseNormalizedNamed(rd)
		if err != nil {
			continue
		}
		if c, ok := n.(reference.Canonical); ok && n.Name() == named.Name() {
			return c.Digest().String()
		}
	}
	return ""
}

// pull pulls ref with retries; it runs once for all concurrent callers.
func (d *Docker) pull(ctx context.Context, ref string) (PullStats, error) {
	began := time.Now()
	stats := PullStats{Pulled: true}
	auth, err := d.RegistryAuth(ref)
	if err != nil {
		pullMetrics.record(ctx, "failed", stats)
		return stats, fmt.Errorf("pull image %s: %w", ref, err)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = d.pullBackoff, 8*d.pullBackoff
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		stats.Attempts++
		n, layers, err := d.pullOnce(ctx, ref, auth)
		stats.Bytes, stats.Layers = n, layers
		if err == nil {
			return struct{}{}, nil
		}
		err = classifyPull(err)
		if errors.Is(err, ErrImageNotFound) || errors.Is(err, ErrRegistryAuth) || errors.Is(err, ErrInvalidSpec) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxTries(uint(d.pullAttempts)), backoff.WithMaxElapsedTime(0))
	stats.Duration = time.Since(began)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrImageNotFound) && !errors.Is(err, ErrRegistryAuth) {
			err = fmt.Errorf("%w after %s (%d attempts): %w", ErrPullTimeout, d.pullTimeout, stats.Attempts, err)
		}
		pullMetrics.record(ctx, "failed", stats)
		return stats, fmt.Errorf("pull image %s: %w", ref, err)
	}
	pullMetrics.record(ctx, "pulled", stats)
	return stats, nil
}

// pullOnce sends one pull request and reads its progress to the end. It
// returns the bytes of the layers the daemon downloaded, as far as its
// progress tells, and how many layers it fetched.
func (d *Docker) pullOnce(ctx context.Context, ref, auth string) (int64, int, error) {
	d.pullRequests.Add(1)
	resp, err := d.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return 0, 0, err
	}
	defer resp.Close()
	sizes := map[string]int64{}
	fetched := map[string]bool{}
	dec := json.NewDecoder(resp)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if ctx.Err() != nil {
				return sum(sizes), len(fetched), context.Cause(ctx)
			}
			return sum(sizes), len(fetched), fmt.Errorf("read the pull's progress: %w", err)
		}
		if m.Error != nil {
			return sum(sizes), len(fetched), errors.New(m.Error.Message)
		}
		if m.ID == "" {
			continue
		}
		switch {
		case m.Status == "Pulling fs layer":
			fetched[m.ID] = true
		case strings.HasPrefix(m.Status, "Downloading") && m.Progress != nil && m.Progress.Total > sizes[m.ID]:
			sizes[m.ID] = m.Progress.Total
		}
	}
	return sum(sizes), len(fetched), nil
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// classifyPull wraps a pull error with ErrImageNotFound or
// ErrRegistryAuth when it says so. The daemon reports both either as an
// HTTP status (mapped by the client to errdefs) or as text in the
// progress stream, worded by the registry, so both are read.
func classifyPull(err error) error {
	msg := strings.ToLower(err.Error())
	switch {
	case cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) ||
		strings.Contains(msg, "unauthorized") || strings.Contains(msg, "authentication required") ||
		strings.Contains(msg, "no basic auth credentials") || strings.Contains(msg, "denied:") ||
		strings.Contains(msg, "pull access denied"):
		// Docker Hub answers "pull access denied … does not exist or may
		// require 'docker login'" for both cases; either way no retry
		// helps.
		return fmt.Errorf("%w: %w", ErrRegistryAuth, err)
	case cerrdefs.IsNotFound(err) || strings.Contains(msg, "manifest unknown") ||
		strings.Contains(msg, "name unknown") || strings.Contains(msg, "not found"):
		return fmt.Errorf("%w: %w", ErrImageNotFound, err)
	}
	return err
}

// pullMetrics are the pull instruments, from the global meter provider.
var pullMetrics = func() (m pullInstruments) {
	meter := otel.Meter("github.com/galaxy/rtmanager/agent/engine")
	m.pulls, _ = meter.Int64Counter("rtmanager.engine.image.pulls",
		metric.WithDescription("Image pulls by outcome (pulled, failed); a pull shared by concurrent jobs counts once."), metric.WithUnit("{pull}"))
	m.bytes, _ = meter.Int64Counter("rtmanager.engine.image.pull.bytes",
		metric.WithDescription("Bytes of the layers downloaded by image pulls."), metric.WithUnit("By"))
	m.duration, _ = meter.Float64Histogram("rtmanager.engine.image.pull.duration",
		metric.WithDescription("Wall time of image pulls, retries included."), metric.WithUnit("s"))
	return m
}()

type pullInstruments struct {
	pulls, bytes metric.Int64Counter
	duration     metric.Float64Histogram
}

func (m pullInstruments) record(ctx context.Context, outcome string, s PullStats) {
	ctx = context.WithoutCancel(ctx)
	m.pulls.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
	m.bytes.Add(ctx, s.Bytes)
	m.duration.Record(ctx, s.Duration.Seconds(), metric.WithAttributes(attribute.String("outcome", outcome)))
}

// ImageLabels returns the labels of a local image (ErrNotFound if the daemon
// does not have it). Not part of Engine: used by the engine-image builder.
func (d *Docker) ImageLabels(ctx context.Context, ref string) (map[string]string, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	img, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w", ref, mapErr(err))
	}
	if img.Config == nil {
		return map[string]string{}, nil
	}
	return maps0(img.Config.Labels), nil
}

// ImportImage creates image ref from a root filesystem tarball, applying
// Dockerfile-style changes ("CMD [\"/engine\"]", "EXPOSE 8080", "LABEL k=v").
// Not part of Engine: used by the engine-image builder.
func (d *Docker) ImportImage(ctx context.Context, ref string, rootfs io.Reader, changes []string) error {
	res, err := d.cli.ImageImport(ctx,
		client.ImageImportSource{Source: rootfs, SourceName: "-"},
		ref, client.ImageImportOptions{Changes: changes})
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	defer res.Close()
	dec := json.NewDecoder(res)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("import image %s: read progress: %w", ref, err)
		}
		if m.Error != nil {
			return fmt.Errorf("import image %s: %w", ref, m.Error)
		}
	}
}
