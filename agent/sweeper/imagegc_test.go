package sweeper_test

// Image garbage collection against the real daemon. Every test works on
// images of a repository namespace of its own and gives GC an allow-list
// of that namespace only: the daemon is shared, and GC must never touch
// anything else.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/imageuse"
	"github.com/galaxy/rtmanager/agent/sweeper"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// present reports whether the daemon has an image under ref.
func (f *fixture) present(ref string) bool {
	f.t.Helper()
	_, err := f.eng.ImageID(context.Background(), ref)
	if errors.Is(err, engine.ErrNotFound) {
		return false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return true
}

// enqueue inserts a queued job naming image, as the Game Master does.
func (f *fixture) enqueue(game, image string) {
	f.t.Helper()
	if _, err := f.store.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ($1, $2, 'start', jsonb_build_object('image_ref', $3::text))`,
		f.hostID, game, image); err != nil {
		f.t.Fatal(err)
	}
}

// recordRunning writes a running record of game on image (no container:
// only the record names it).
func (f *fixture) recordRunning(game, image string) {
	f.t.Helper()
	p := runtime.Placement{GameID: game, HostID: f.hostID, EngineEndpoint: runtime.EngineEndpointFor(game), StatePath: "/srv/state/" + game, DockerNetwork: "galaxy"}
	if _, err := f.store.UpdateRecord(context.Background(), game, func(_ *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(p, "c0ffee", image, at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
	}); err != nil {
		f.t.Fatal(err)
	}
}

func TestImageGCRemovesOnlyUnusedAllowedImages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ns := "rtmanager-test-gc-" + f.hostID
	ref := func(name string) string { return ns + "/engine:" + name }
	for _, name := range []string{"container", "record", "job", "unused", "enqueued", "held", "twotags"} {
		dockertest.UniqueImage(t, ref(name), 64<<10)
	}
	outside := "rtmanager-test-gcother-" + f.hostID + "/engine:1"
	dockertest.UniqueImage(t, outside, 64<<10)
	// One image, two tags: one allowed, one not.
	alias := "rtmanager-test-gcother-" + f.hostID + "/alias:1"
	if _, err := dockertest.Client(t).ImageTag(t.Context(), client.ImageTagOptions{Source: ref("twotags"), Target: alias}); err != nil {
		t.Fatal(err)
	}

	dockertest.CreateUnmanaged(t, "gc-"+f.hostID, ref("container"), nil)
	f.recordRunning(f.gameID("rec"), ref("record"))
	f.enqueue(f.gameID("queued"), ref("job"))
	guard := imageuse.New(f.clock.Now)
	release := guard.Use(ref("held"))
	defer release()

	gc := &sweeper.ImageGCConfig{
		Images: f.eng, AllowedImages: []string{ns + "/*"}, Guard: guard,
		MaxUnused: time.Hour, Now: f.clock.Now,
	}
	// A job naming "enqueued" is inserted while GC runs: after the image
	// was chosen, before it is removed.
	var once sync.Once
	sweeper.SetBeforeRemove(gc, func(img engine.LocalImage) {
		for _, tag := range img.RepoTags {
			if tag == "docker.io/"+ref("enqueued") || tag == ref("enqueued") {
				once.Do(func() { f.enqueue(f.gameID("late"), ref("enqueued")) })
			}
		}
	})
	s := f.sweeper(f.eng, f.store, sweeper.Config{ImageGC: gc})

	rep, err := s.Pass(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images.Removed != 0 {
		t.Fatalf("first pass removed %d images: nothing has been unused for an hour yet", rep.Images.Removed)
	}
	f.clock.Advance(2 * time.Hour)
	rep, err = s.Pass(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep.Images)
	// "held" counts as used now (a job holds it); "enqueued" was chosen
	// and kept at its final check.
	if rep.Images.Removed != 1 || rep.Images.ByAge != 1 || rep.Images.Kept != 1 {
		t.Fatalf("second pass: %+v; want \"unused\" removed, \"enqueued\" kept at the last moment", rep.Images)
	}
	if f.present(ref("unused")) {
		t.Fatal("the unused image is still there")
	}
	for _, r := range []string{ref("container"), ref("record"), ref("job"), ref("enqueued"), ref("held"), ref("twotags"), alias, outside} {
		if !f.present(r) {
			t.Errorf("image %s was removed", r)
		}
	}
	// Released and no longer named: now it goes too, once unused long enough.
	release()
	if _, err := f.store.Pool().Exec(t.Context(), `UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE host_id = $1`, f.hostID); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first pass sees them unused, the second two hours later
		if rep, err = s.Pass(t.Context()); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(2 * time.Hour)
	}
	for _, gone := range []string{ref("held"), ref("enqueued"), ref("job")} {
		if f.present(gone) {
			t.Errorf("image %s is still there after its job ended and two hours passed (%+v)", gone, rep.Images)
		}
	}
	for _, r := range []string{ref("container"), ref("record"), ref("twotags"), alias, outside} {
		if !f.present(r) {
			t.Errorf("image %s was removed", r)
		}
	}
}

// usageOf measures "disk usage" as the bytes of the test's own images, so
// that other tests' images on the shared daemon do not move it.
type usageOf struct {
	*engine.Docker
	ns string
}

func (u usageOf) ImagesDiskUsage(ctx context.Context) (int64, error) {
	imgs, err := u.ListImages(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, im := range imgs {
		for _, tag := range im.RepoTags {
			if strings.Contains(tag, u.ns+"/") {
				n += im.Size
				break
			}
		}
	}
	return n, nil
}

// Over the high-water mark, unused images go least recently used first
// until the usage is under the low-water mark; none unused for less than
// the minimum age, none in use.
func TestImageGCDiskPressure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ns := "rtmanager-test-gcdisk-" + f.hostID
	ref := func(i int) string { return fmt.Sprintf("%s/engine:%d", ns, i) }
	for i := 1; i <= 5; i++ {
		dockertest.UniqueImage(t, ref(i), 1<<20)
	}
	f.enqueue(f.gameID("queued"), ref(1)) // the least recently used, but named by a job
	guard := imageuse.New(f.clock.Now)
	u := usageOf{Docker: f.eng, ns: ns}
	used, err := u.ImagesDiskUsage(t.Context())
	if err != nil || used < 5<<20 {
		t.Fatalf("usage %d, %v", used, err)
	}
	// Five images of about 1 MiB fill 95% of the budget; the low-water
	// mark leaves room for about two and a half.
	gc := &sweeper.ImageGCConfig{
		Images: u, AllowedImages: []string{ns + "/*"}, Guard: guard,
		MinAge: 10 * time.Minute, HighPercent: 90, LowPercent: 48, BudgetBytes: used * 100 / 95, Now: f.clock.Now,
	}
	s := f.sweeper(f.eng, f.store, sweeper.Config{ImageGC: gc})

	// Used a minute ago at most: under the minimum age, nothing goes.
	rep, err := s.Pass(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images.Removed != 0 || rep.Images.DiskPercent < 90 {
		t.Fatalf("first pass: %+v; want the pressure seen and nothing removed yet", rep.Images)
	}
	for i := 1; i <= 5; i++ { // used in order: 1 the least recently
		f.clock.Advance(time.Minute)
		guard.Use(ref(i))()
	}
	f.clock.Advance(time.Hour)
	guard.Use(ref(2))() // 2 is now the most recently used
	if rep, err = s.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep.Images)
	// 1 is named by a job and 2 was used just now (under the minimum
	// age). The others go least recently used first, 3, 4, then 5, until
	// the expected usage is under the mark: 2.47 images' worth to free.
	for i, want := range map[int]bool{1: true, 2: true, 3: false, 4: false, 5: false} {
		if f.present(ref(i)) != want {
			t.Errorf("image %d present = %v, want %v (%+v)", i, !want, want, rep.Images)
		}
	}
	if rep.Images.ByDisk != 3 {
		t.Errorf("removed by the disk rule: %d, want 3", rep.Images.ByDisk)
	}
}

// With the data root visible (the agent runs on the daemon's host), the
// usage is its filesystem's.
func TestImageGCMeasuresTheDataRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gc := &sweeper.ImageGCConfig{
		Images: f.eng, AllowedImages: []string{"rtmanager-test-gcroot-" + f.hostID + "/*"},
		HighPercent: 100, LowPercent: 99, Now: f.clock.Now,
	}
	s := f.sweeper(f.eng, f.store, sweeper.Config{ImageGC: gc})
	rep, err := s.Pass(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images.DiskPercent < 0 || rep.Images.DiskPercent > 100 || rep.Images.Removed != 0 {
		t.Fatalf("report %+v: want the data root's usage and nothing removed", rep.Images)
	}
}

func TestImageGCConfigRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for name, gc := range map[string]sweeper.ImageGCConfig{
		"no images":        {},
		"low above high":   {Images: f.eng, HighPercent: 80, LowPercent: 85},
		"high over 100":    {Images: f.eng, HighPercent: 101, LowPercent: 85},
		"negative age":     {Images: f.eng, MaxUnused: -time.Second},
		"bad allow-list":   {Images: f.eng, AllowedImages: []string{"*"}},
		"negative budget":  {Images: f.eng, BudgetBytes: -1},
		"negative min age": {Images: f.eng, MinAge: -time.Second},
	} {
		if _, err := sweeper.New(f.store, f.eng, nil, sweeper.Config{HostID: f.hostID, Schedule: "@every 1h", ImageGC: &gc}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
