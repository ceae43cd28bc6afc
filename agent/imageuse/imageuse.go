// Package imageuse keeps image garbage collection and the jobs that use
// images from stepping on each other inside one agent.
//
// A job holds its image (Use) from before it makes the image present
// until it has created its container (from then on Docker itself refuses
// to delete an image a container uses) or ends. The collector asks to
// remove an image (TryRemove): refused while a job holds one of its
// references, and while the removal runs a job that wants one of them
// waits, then finds the image gone and pulls it again. Every Use also
// stamps the reference's last use, which the collector counts an image's
// idleness from, as kubelet does.
//
// References are compared normalised (docker.io/library/nginx:latest for
// "nginx"; "name@digest" for a digest, whatever tag is beside it), so the
// job's spelling and the daemon's list meet.
package imageuse

import (
	"sync"
	"time"

	"github.com/distribution/reference"
)

// Guard is the agent's one registry of images in use; the zero value is
// not usable: call New.
type Guard struct {
	now func() time.Time

	mu       sync.Mutex
	changed  *sync.Cond
	using    map[string]int
	removing map[string]bool
	lastUsed map[string]time.Time
}

// New returns a guard; now is the clock (nil: time.Now).
func New(now func() time.Time) *Guard {
	if now == nil {
		now = time.Now
	}
	g := &Guard{now: now, using: map[string]int{}, removing: map[string]bool{}, lastUsed: map[string]time.Time{}}
	g.changed = sync.NewCond(&g.mu)
	return g
}

// Key normalises an image reference; a reference that does not parse is
// its own key.
func Key(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	if d, ok := named.(reference.Digested); ok {
		return named.Name() + "@" + d.Digest().String()
	}
	return reference.TagNameOnly(named).String()
}

// Use holds ref until release is called, waiting while the collector is
// removing it. A nil guard holds nothing.
func (g *Guard) Use(ref string) (release func()) {
	if g == nil {
		return func() {}
	}
	k := Key(ref)
	g.mu.Lock()
	for g.removing[k] {
		g.changed.Wait()
	}
	g.using[k]++
	g.lastUsed[k] = g.now()
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			if g.using[k]--; g.using[k] <= 0 {
				delete(g.using, k)
			}
			g.lastUsed[k] = g.now()
			g.mu.Unlock()
		})
	}
}

// LastUsed returns the latest use of any of refs, zero when none was
// used since the agent started.
func (g *Guard) LastUsed(refs []string) time.Time {
	var last time.Time
	if g == nil {
		return last
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range refs {
		k := Key(r)
		if g.using[k] > 0 {
			return g.now()
		}
		if t := g.lastUsed[k]; t.After(last) {
			last = t
		}
	}
	return last
}

// TryRemove marks refs (one image's references) as being removed and
// returns done, to call once the removal is over; ok is false, and
// nothing is marked, when a job holds any of them.
func (g *Guard) TryRemove(refs []string) (done func(), ok bool) {
	if g == nil {
		return func() {}, true
	}
	keys := make([]string, len(refs))
	for i, r := range refs {
		keys[i] = Key(r)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		if g.using[k] > 0 || g.removing[k] {
			return nil, false
		}
	}
	for _, k := range keys {
		g.removing[k] = true
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			for _, k := range keys {
				delete(g.removing, k)
			}
			g.changed.Broadcast()
			g.mu.Unlock()
		})
	}, true
}
