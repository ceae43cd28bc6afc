package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/retry"
)

// What image garbage collection (agent/sweeper) needs from Docker. These
// calls read every image and container of the daemon, not only the
// agent's: an image any container uses is in use. Removal is only ever
// asked for by reference, never forced.

// ErrImageInUse: the daemon refused to remove an image a container uses.
var ErrImageInUse = errors.New("image is in use by a container")

// LocalImage is one image the daemon has.
type LocalImage struct {
	ID string
	// RepoTags ("repo:tag") and RepoDigests ("repo@sha256:…") are the
	// references it is known by.
	RepoTags, RepoDigests []string
	Created               time.Time
	// Size is its size on disk, shared layers included.
	Size int64
}

// listAttempts bounds the reads of a list that a concurrent removal broke.
const listAttempts = 5

// ListImages returns the daemon's images (not intermediate layers).
//
// A daemon on the containerd image store (Docker 26) fails the whole list
// with "content digest …: not found" when an image is removed while it
// lists; the list is read again, a few times, before that is an error.
func (d *Docker) ListImages(ctx context.Context) ([]LocalImage, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	items, err := backoff.Retry(ctx, func() ([]image.Summary, error) {
		res, err := d.cli.ImageList(ctx, client.ImageListOptions{})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return nil, backoff.Permanent(err)
		}
		return res.Items, err
	}, backoff.WithBackOff(retry.Backoff(10*time.Millisecond, 200*time.Millisecond)), backoff.WithMaxTries(listAttempts))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]LocalImage, 0, len(items))
	for _, im := range items {
		out = append(out, LocalImage{
			ID: im.ID, RepoTags: dropNone(im.RepoTags), RepoDigests: dropNone(im.RepoDigests),
			Created: time.Unix(im.Created, 0), Size: im.Size,
		})
	}
	return out, nil
}

// dropNone removes the "<none>:<none>" and "<none>@<none>" placeholders
// older daemons list for untagged images.
func dropNone(refs []string) []string {
	out := refs[:0:0]
	for _, r := range refs {
		if r != "<none>:<none>" && r != "<none>@<none>" {
			out = append(out, r)
		}
	}
	return out
}

// ContainerImageIDs returns the image id of every container of the
// daemon, in any state, whoever created it.
func (d *Docker) ContainerImageIDs(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make(map[string]bool, len(res.Items))
	for _, c := range res.Items {
		ids[c.ImageID] = true
	}
	return ids, nil
}

// ImageID returns the id of the local image ref names (ErrNotFound when
// the daemon has none).
func (d *Docker) ImageID(ctx context.Context, ref string) (string, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, mapErr(err))
	}
	return res.ID, nil
}

// RemoveImage removes the reference ref (a tag, or "repo@digest"); the
// image itself goes with its last reference, which deleted reports. A
// reference already gone is fine; an image a container uses is refused
// with ErrImageInUse.
func (d *Docker) RemoveImage(ctx context.Context, ref string) (deleted bool, err error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	// Whatever the outcome, EnsureImage must look at the daemon again.
	defer d.forgetImages()
	res, err := d.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	switch {
	case cerrdefs.IsNotFound(err):
		return false, nil
	case cerrdefs.IsConflict(err):
		return false, fmt.Errorf("remove image %s: %w: %w", ref, ErrImageInUse, err)
	case err != nil:
		return false, fmt.Errorf("remove image %s: %w", ref, err)
	}
	for _, it := range res.Items {
		if it.Deleted != "" {
			return true, nil
		}
	}
	return false, nil
}

// DataRoot returns the daemon's data root (docker info's DockerRootDir),
// as a path on the daemon's host.
func (d *Docker) DataRoot(ctx context.Context) (string, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", fmt.Errorf("docker info: %w", err)
	}
	return res.Info.DockerRootDir, nil
}

// ImagesDiskUsage returns the bytes the daemon's images take (the
// system df API: shared layers counted once).
func (d *Docker) ImagesDiskUsage(ctx context.Context) (int64, error) {
	res, err := d.cli.DiskUsage(ctx, client.DiskUsageOptions{Images: true})
	if err != nil {
		return 0, fmt.Errorf("docker system df: %w", err)
	}
	return res.Images.TotalSize, nil
}
