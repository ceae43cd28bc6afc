package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// seed returns RTM_FAULT_SEED, or a fresh seed; it is logged so that a
// failing run can be repeated.
func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("RTM_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RTM_FAULT_SEED=%q is not a number", v)
		}
		s = n
	}
	t.Logf("random seed %d (repeat with RTM_FAULT_SEED=%d)", s, s)
	return s
}

// secondImage tags the test image under a second name, for image changes.
func (h *harness) secondImage() string {
	h.t.Helper()
	ref := dockertest.ImageRepo + ":faults-b"
	if _, err := h.raw.ImageTag(h.ctx, client.ImageTagOptions{Source: h.image, Target: ref}); err != nil {
		h.t.Fatalf("tag %s: %v", ref, err)
	}
	return ref
}

// gmGame is what the simulated Game Master has asked of a game so far.
type gmGame struct {
	id    string
	state string // absent, running, stopped, removed
	image string
}

// TestSIGKILLDuringJobs kills the agent with SIGKILL at random points of
// job execution, round after round, and starts a new one each time,
// while the Game Master keeps enqueueing lifecycle jobs. Nothing may be
// lost or done twice: every job ends succeeded (the jobs are all valid and
// have attempts to spare), one container per game, records true.
func TestSIGKILLDuringJobs(t *testing.T) {
	t.Parallel()
	n := rounds(t, 30)
	rng := rand.New(rand.NewPCG(seed(t), 7))
	h := newHarness(t, harnessOptions{env: map[string]string{"RTM_ORPHAN_GRACE": "10s", "RTM_LEASE_DURATION": "2s"}})
	imageB := h.secondImage()
	h.startConsumer()
	a := h.startAgent()

	var games []*gmGame
	newGame := func() *gmGame {
		g := &gmGame{id: h.game(fmt.Sprintf("k%d", len(games))), state: "absent", image: h.image}
		games = append(games, g)
		return g
	}
	active := []*gmGame{newGame(), newGame(), newGame()}
	// next enqueues the job that follows the game's state.
	next := func(i int) int64 {
		g := active[i]
		// Kills may hit one job several times: every kill costs an
		// attempt, so give plenty.
		const attempts = 100
		switch g.state {
		case "absent":
			g.state = "running"
			return h.enqueue(g.id, "start", startPayload(g.image), attempts)
		case "running":
			switch rng.IntN(4) {
			case 0:
				g.state = "stopped"
				return h.enqueue(g.id, "stop", `{"timeout_seconds": 5}`, attempts)
			case 1:
				return h.enqueue(g.id, "restart", `{"timeout_seconds": 5}`, attempts)
			case 2:
				g.image = map[bool]string{true: imageB, false: h.image}[g.image == h.image]
				return h.enqueue(g.id, "change_image", startPayload(g.image), attempts)
			default:
				g.state = "stopped"
				return h.enqueue(g.id, "stop", `{}`, attempts)
			}
		default: // stopped
			if rng.IntN(3) == 0 {
				g.state = "removed"
				id := h.enqueue(g.id, "remove", `{}`, attempts)
				active[i] = newGame()
				return id
			}
			g.state = "running"
			return h.enqueue(g.id, "start", startPayload(g.image), attempts)
		}
	}

	begin := time.Now()
	var ids []int64
	duringJob, kinds := 0, map[string]int{}
	for round := range n {
		var roundIDs []int64
		for range 1 + rng.IntN(3) {
			roundIDs = append(roundIDs, next(rng.IntN(len(active))))
		}
		ids = append(ids, roundIDs...)
		// A random point: most rounds when the agent is running a job,
		// plus a little; the others after a random delay.
		trigger := "delay"
		ownsRunning := func() int { return h.runningOf(a) }
		if rng.IntN(3) > 0 {
			trigger = "job running"
			waitUntil(5*time.Second, func() bool {
				for _, id := range roundIDs {
					if h.job(id).Status == "running" {
						return true
					}
				}
				return false
			})
			awaitRandom(rng, 300*time.Millisecond)
		} else {
			awaitRandom(rng, 1500*time.Millisecond)
		}
		kinds[trigger]++
		running := ownsRunning()
		if running > 0 {
			duringJob++
		}
		h.kill(a)
		t.Logf("%s round %d: %d jobs enqueued, killed %s (%s trigger, %d of its jobs running)", time.Since(begin).Round(time.Millisecond), round, len(roundIDs), a.name, trigger, running)
		// Restart once the dead agent's job leases have run out (as
		// systemd's RestartSec would): the new agent requeues expired
		// leases when it becomes active, and after that only every two
		// minutes (see the README's fault-injection section).
		waitUntil(30*time.Second, func() bool { return h.liveLeasesOf(a) == 0 })
		a = h.startAgent()
	}

	t.Logf("%d rounds took %s", n, time.Since(begin).Round(time.Millisecond))
	f := h.check(checkOptions{settle: 3 * time.Minute})
	t.Logf("settling and checking took %s", time.Since(begin).Round(time.Millisecond))
	for _, id := range ids {
		if j := h.job(id); j.Status != "succeeded" {
			f.Violations++
			t.Logf("VIOLATION: job %d (%s %s) ended %s after %d attempts: %s", j.ID, j.Kind, j.GameID, j.Status, j.Attempt, deref(j.LastError))
		}
	}
	if !a.alive() {
		f.Violations++
		t.Logf("VIOLATION: the last agent exited: %v", a.err)
	}
	f.Scenario, f.Rounds = "SIGKILL during jobs", n
	f.Faults = fmt.Sprintf("%d SIGKILLs (%d with a job of the agent running; %d timed by a running job, %d by a random delay) over %d games",
		n, duringJob, kinds["job running"], kinds["delay"], len(games))
	h.report(f)
}

// awaitRandom waits a random time up to max: the fault's random timing,
// not a synchronisation.
func awaitRandom(rng *rand.Rand, max time.Duration) {
	timer := time.NewTimer(time.Duration(rng.Int64N(int64(max))))
	defer timer.Stop()
	<-timer.C
}

// runningOf counts the running jobs whose lease agent a holds.
func (h *harness) runningOf(a *agentProc) int { return h.leasesOf(a, false) }

// liveLeasesOf counts the running jobs whose unexpired lease agent a holds.
func (h *harness) liveLeasesOf(a *agentProc) int { return h.leasesOf(a, true) }

// leasesOf counts the running jobs leased by agent a, whose id is
// "host/pid/random" or "host/machine/pid/random".
func (h *harness) leasesOf(a *agentProc, liveOnly bool) int {
	pid := a.cmd.Process.Pid
	var n int
	_ = h.pool.QueryRow(h.ctx, `SELECT count(*) FROM jobs WHERE status = 'running' AND (lease_owner LIKE $1 OR lease_owner LIKE $2)
		AND (NOT $3 OR lease_expires_at > now())`,
		fmt.Sprintf("%s/%d/%%", h.hostID, pid), fmt.Sprintf("%s/%%/%d/%%", h.hostID, pid), liveOnly).Scan(&n)
	return n
}
