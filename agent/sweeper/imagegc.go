package sweeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sys/unix"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/imageuse"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Image garbage collection, after kubelet's image GC (high and low
// thresholds of disk usage, a minimum age) and Nomad's image_delay (an
// image unused for that long goes). It runs in every sweep pass and
// removes only images that:
//
//   - match the host's allow-list by every reference they have (an
//     image with a tag outside it, or with no reference at all, is never
//     touched);
//   - no container of the daemon uses (whoever created it);
//   - no live record runs and no queued or running job of the host names,
//     checked again for each image just before it is removed;
//   - no job of this agent holds (imageuse.Guard), and that have been
//     unused for long enough: counted from the later of the first pass
//     that found them unused and their last use by a job of this agent
//     (the clock starts again when the agent restarts, which only delays
//     removals).
//
// Two rules pick them. Age: unused for longer than MaxUnused. Disk: when
// the usage passes HighPercent, those unused for at least MinAge go,
// least recently used first, until the usage is expected under
// LowPercent. Removal is by reference and never forced, so the daemon
// refuses an image a container started using meanwhile. A job enqueued
// between the final check and the removal finds the image gone and pulls
// it again: it waits, it does not fail.

// Image GC setting names, for errors.
const (
	SettingImageGCMaxUnused = "RTM_IMAGE_GC_MAX_UNUSED"
	SettingImageGCMinAge    = "RTM_IMAGE_GC_MIN_AGE"
	SettingImageGCHigh      = "RTM_IMAGE_GC_HIGH_PERCENT"
	SettingImageGCLow       = "RTM_IMAGE_GC_LOW_PERCENT"
	SettingImageGCBudget    = "RTM_IMAGE_GC_BUDGET_BYTES"
)

// Images is what image garbage collection needs from Docker;
// *engine.Docker implements it.
type Images interface {
	ListImages(ctx context.Context) ([]engine.LocalImage, error)
	ContainerImageIDs(ctx context.Context) (map[string]bool, error)
	ImageID(ctx context.Context, ref string) (string, error)
	RemoveImage(ctx context.Context, ref string) (deleted bool, err error)
	DataRoot(ctx context.Context) (string, error)
	ImagesDiskUsage(ctx context.Context) (int64, error)
}

var _ Images = (*engine.Docker)(nil)

// ImageGCConfig configures image garbage collection; nil turns it off.
type ImageGCConfig struct {
	// Images is the daemon; required.
	Images Images
	// AllowedImages is the host's allow-list (RTM_ALLOWED_IMAGES): only
	// images all of whose references match it are collected.
	AllowedImages []string
	// Guard is shared with the executor; nil: no job is protected beyond
	// what the database says.
	Guard *imageuse.Guard
	// MaxUnused: an image unused for longer goes; 0 turns the age rule
	// off.
	MaxUnused time.Duration
	// MinAge: under disk pressure, images unused for at least this long
	// go.
	MinAge time.Duration
	// HighPercent and LowPercent are the disk usage that starts removals
	// and the one they aim for; HighPercent 0 turns the disk rule off.
	HighPercent, LowPercent int
	// BudgetBytes, when positive, measures the usage as the images'
	// bytes (the daemon's system df) against this budget instead of the
	// filesystem of the daemon's data root: for an agent that does not
	// see that filesystem (run in a container without it mounted).
	BudgetBytes int64
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time
	// beforeRemove, in tests, runs after an image was chosen and before
	// its final check.
	beforeRemove func(img engine.LocalImage)
}

func (c *ImageGCConfig) validate() error {
	var errs []error
	if c.Images == nil {
		errs = append(errs, errors.New("image gc: no Docker images"))
	}
	if c.MaxUnused < 0 {
		errs = append(errs, fmt.Errorf("%s must not be negative (0 turns the age rule off), got %s", SettingImageGCMaxUnused, c.MaxUnused))
	}
	if c.MinAge < 0 {
		errs = append(errs, fmt.Errorf("%s must not be negative, got %s", SettingImageGCMinAge, c.MinAge))
	}
	if c.HighPercent != 0 && (c.HighPercent < 1 || c.HighPercent > 100 || c.LowPercent < 0 || c.LowPercent >= c.HighPercent) {
		errs = append(errs, fmt.Errorf("%s and %s must satisfy 0 <= low < high <= 100 (high 0 turns the disk rule off), got high %d, low %d",
			SettingImageGCHigh, SettingImageGCLow, c.HighPercent, c.LowPercent))
	}
	if c.BudgetBytes < 0 {
		errs = append(errs, fmt.Errorf("%s must not be negative, got %d", SettingImageGCBudget, c.BudgetBytes))
	}
	for _, p := range c.AllowedImages {
		if err := job.ValidateImagePattern(p); err != nil {
			errs = append(errs, fmt.Errorf("image gc: %w", err))
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return errors.Join(errs...)
}

// ImageGCReport says what one image collection did.
type ImageGCReport struct {
	// Candidates counts the allowed images nothing uses.
	Candidates int
	// Removed counts the images deleted, ByAge and ByDisk by rule.
	Removed, ByAge, ByDisk int
	// Kept counts chosen images left at the final check (a job or record
	// names them, a job holds them, a container uses them).
	Kept int
	// Freed is the size of the deleted images.
	Freed int64
	// DiskPercent is the usage measured (-1 when the disk rule is off or
	// the usage could not be read).
	DiskPercent int
}

// imageGC holds what the collector remembers between passes.
type imageGC struct {
	cfg ImageGCConfig
	// unusedSince is when a pass first found each image unused.
	unusedSince map[string]time.Time
	warnedRoot  bool
}

type candidate struct {
	img   engine.LocalImage
	refs  []string
	since time.Time
}

// collectImages runs one image collection.
func (s *Sweeper) collectImages(ctx context.Context) (ImageGCReport, error) {
	g := s.gc
	rep := ImageGCReport{DiskPercent: -1}
	now := g.cfg.Now()
	imgs, err := g.cfg.Images.ListImages(ctx)
	if err != nil {
		return rep, fmt.Errorf("image gc: %w", err)
	}
	inUse, err := s.imagesInUse(ctx)
	if err != nil {
		return rep, err
	}
	var cands []candidate
	seen := map[string]bool{}
	for _, img := range imgs {
		seen[img.ID] = true
		refs := imageRefs(img)
		if inUse[img.ID] || !allAllowed(refs, g.cfg.AllowedImages) {
			delete(g.unusedSince, img.ID)
			continue
		}
		since, ok := g.unusedSince[img.ID]
		if !ok {
			since = now
			g.unusedSince[img.ID] = now
		}
		if last := g.cfg.Guard.LastUsed(refs); last.After(since) {
			since = last
		}
		cands = append(cands, candidate{img: img, refs: refs, since: since})
	}
	for id := range g.unusedSince {
		if !seen[id] {
			delete(g.unusedSince, id)
		}
	}
	rep.Candidates = len(cands)
	// Least recently used first; the oldest image first among equals.
	sort.SliceStable(cands, func(i, j int) bool {
		if !cands[i].since.Equal(cands[j].since) {
			return cands[i].since.Before(cands[j].since)
		}
		return cands[i].img.Created.Before(cands[j].img.Created)
	})

	var errs []error
	removed := map[string]bool{}
	if g.cfg.MaxUnused > 0 {
		for _, c := range cands {
			if now.Sub(c.since) <= g.cfg.MaxUnused || ctx.Err() != nil {
				continue
			}
			ok, err := s.removeImage(ctx, c, "age", &rep)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				removed[c.img.ID] = true
				rep.ByAge++
			}
		}
	}
	if g.cfg.HighPercent > 0 && ctx.Err() == nil {
		used, capacity, err := s.diskUsage(ctx)
		switch {
		case err != nil:
			errs = append(errs, err)
		case capacity > 0:
			used -= rep.Freed
			rep.DiskPercent = int(used * 100 / capacity)
			if used*100 > int64(g.cfg.HighPercent)*capacity {
				toFree := used - int64(g.cfg.LowPercent)*capacity/100
				for _, c := range cands {
					if toFree <= 0 || ctx.Err() != nil {
						break
					}
					if removed[c.img.ID] || now.Sub(c.since) < g.cfg.MinAge {
						continue
					}
					before := rep.Freed
					ok, err := s.removeImage(ctx, c, "disk", &rep)
					if err != nil {
						errs = append(errs, err)
					}
					if ok {
						rep.ByDisk++
						toFree -= rep.Freed - before
					}
				}
			}
		}
	}
	return rep, errors.Join(errs...)
}

// imagesInUse returns the ids of the images containers use and live
// records and active jobs name.
func (s *Sweeper) imagesInUse(ctx context.Context) (map[string]bool, error) {
	ids, err := s.gc.cfg.Images.ContainerImageIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("image gc: %w", err)
	}
	refs, err := s.store.ImagesInUse(ctx, s.cfg.HostID)
	if err != nil {
		return nil, fmt.Errorf("image gc: %w", err)
	}
	for _, ref := range refs {
		id, err := s.gc.cfg.Images.ImageID(ctx, ref)
		switch {
		case err == nil:
			ids[id] = true
		case errors.Is(err, engine.ErrNotFound):
		default:
			// Unknown whether ref names one of them: keep them all.
			return nil, fmt.Errorf("image gc: %w", err)
		}
	}
	return ids, nil
}

// removeImage checks c once more and removes its references. It reports
// whether the image was deleted.
func (s *Sweeper) removeImage(ctx context.Context, c candidate, rule string, rep *ImageGCReport) (bool, error) {
	g := s.gc
	done, ok := g.cfg.Guard.TryRemove(c.refs)
	if !ok {
		rep.Kept++
		return false, nil
	}
	defer done()
	if g.cfg.beforeRemove != nil {
		g.cfg.beforeRemove(c.img)
	}
	// The final check, under the guard: a job enqueued since the pass
	// began names it, or a record started running it.
	inUse, err := s.imagesInUse(ctx)
	if err != nil {
		return false, err
	}
	if inUse[c.img.ID] {
		rep.Kept++
		delete(g.unusedSince, c.img.ID)
		s.log.Info("image gc keeps an image that came into use", "image_id", c.img.ID, "refs", c.refs)
		return false, nil
	}
	deleted := false
	for _, ref := range c.refs {
		d, err := g.cfg.Images.RemoveImage(ctx, ref)
		if errors.Is(err, engine.ErrImageInUse) {
			rep.Kept++
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("image gc: %w", err)
		}
		deleted = deleted || d
	}
	if !deleted {
		return false, nil
	}
	delete(g.unusedSince, c.img.ID)
	rep.Removed++
	rep.Freed += c.img.Size
	imageMetrics.removed.Add(ctx, 1, metric.WithAttributes(attribute.String("rule", rule)))
	imageMetrics.freed.Add(ctx, c.img.Size, metric.WithAttributes(attribute.String("rule", rule)))
	s.log.Info("image gc removed an unused image", "rule", rule, "image_id", c.img.ID, "refs", c.refs,
		"size", c.img.Size, "unused_since", c.since)
	return true, nil
}

// diskUsage returns the bytes used and the capacity the disk rule
// compares: the images' bytes against the budget, or the data root's
// filesystem when the agent sees it (capacity 0: unknown).
func (s *Sweeper) diskUsage(ctx context.Context) (used, capacity int64, err error) {
	g := s.gc
	if g.cfg.BudgetBytes > 0 {
		used, err := g.cfg.Images.ImagesDiskUsage(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("image gc: %w", err)
		}
		return used, g.cfg.BudgetBytes, nil
	}
	root, err := g.cfg.Images.DataRoot(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("image gc: %w", err)
	}
	var st unix.Statfs_t
	if _, serr := os.Stat(root); serr != nil || unix.Statfs(root, &st) != nil {
		if !g.warnedRoot {
			g.warnedRoot = true
			s.log.Warn("image gc: the daemon's data root is not visible here, so its disk usage is unknown and the disk rule is off; mount it at the same path or set "+SettingImageGCBudget, "data_root", root)
		}
		return 0, 0, nil
	}
	total := int64(st.Blocks) * int64(st.Bsize)
	free := int64(st.Bavail) * int64(st.Bsize)
	return total - free, total, nil
}

// imageRefs returns the references to remove an image by: its tags, or
// its "repo@digest" names when it has none.
func imageRefs(img engine.LocalImage) []string {
	if len(img.RepoTags) > 0 {
		return slices.Clone(img.RepoTags)
	}
	return slices.Clone(img.RepoDigests)
}

// allAllowed reports whether refs is not empty and the allow-list admits
// every one of them (and every digest name beside them).
func allAllowed(refs []string, allowed []string) bool {
	if len(refs) == 0 {
		return false
	}
	for _, r := range refs {
		if strings.TrimSpace(r) == "" || job.CheckImage(r, allowed) != nil {
			return false
		}
	}
	return true
}

var imageMetrics = func() (m struct{ removed, freed metric.Int64Counter }) {
	meter := otel.Meter("github.com/galaxy/rtmanager/agent/sweeper")
	m.removed, _ = meter.Int64Counter("rtmanager.sweeper.images.removed",
		metric.WithDescription("Unused engine images removed by image garbage collection, by rule (age, disk)."), metric.WithUnit("{image}"))
	m.freed, _ = meter.Int64Counter("rtmanager.sweeper.images.freed",
		metric.WithDescription("Bytes of the images image garbage collection removed, by rule (age, disk)."), metric.WithUnit("By"))
	return m
}()
