package faults

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockerd"
)

// TestDockerdRestart takes the dockerd behind DOCKER_HOST (or the default
// socket) away under a running agent that has games running, one stopped,
// and jobs in flight; two engine processes are SIGKILLed by pid while the
// daemon is down, so no die event can reach the agent. Jobs are enqueued
// during the outage. The agent is then frozen (SIGSTOP), dockerd is
// started again and three containers are removed behind the agent's back
// before it can reconnect and relist; then it is thawed. It must
// reconnect, repair the records from a relist, run the queued jobs, see
// events again, and keep the invariants: records agree with Docker, each
// change reported once.
//
// How the daemon goes away depends on live-restore. With it, a SIGTERM
// (a clean stop) leaves the containers running under their shims. Without
// it (Debian's default), a SIGTERMed daemon stops every container itself
// and the agent receives their die events before the stream ends, so
// nothing dies behind its back: the test SIGKILLs the daemon instead (a
// crash), which leaves the containers running under their shims, and the
// restarted daemon stops those that are still alive when it restores them.
//
// It runs only with RTM_TEST_RESTART_DOCKERD=1 (make test-disruptive, run
// by make test under CI after every other test: pulling the daemon away
// would break the Docker tests running in parallel), it is not parallel
// (the other scenarios of this package wait until it is over), and it
// fails when dockerd is not a plain process it can restart. It always
// starts dockerd again, even when it fails.
func TestDockerdRestart(t *testing.T) {
	if os.Getenv("RTM_TEST_RESTART_DOCKERD") != "1" {
		t.Skip("restarts dockerd: set RTM_TEST_RESTART_DOCKERD=1 to run (make test-disruptive; make test does under CI)")
	}
	d, why := dockerd.Find()
	if why != "" {
		t.Fatalf("RTM_TEST_RESTART_DOCKERD=1 but dockerd cannot be restarted here: %s", why)
	}
	t.Logf("restarting %s", d)
	// The host lease outlives the freeze below (its length is dockerd's
	// start-up): the test is about Docker, not a takeover.
	h := newHarness(t, harnessOptions{env: map[string]string{"RTM_HOST_LEASE_TTL": "60s"}})
	info, err := h.raw.Info(h.ctx, client.InfoOptions{})
	must(t, err)
	liveRestore := info.Info.LiveRestoreEnabled
	h.startConsumer()
	a := h.startAgent()

	begin := time.Now()
	phase := func(what string) { t.Logf("%s: %s", time.Since(begin).Round(time.Millisecond), what) }
	var ids []int64
	enqueue := func(g, kind, payload string, attempts int) {
		ids = append(ids, h.enqueue(h.game(g), kind, payload, attempts))
	}
	// Running before the outage: die with the daemon (d0–d3), or are
	// removed behind the agent's back once it is back (d2, d3), or are
	// stopped by a job first and then removed behind its back (d4), or
	// get a job during the outage (d5).
	for i := range 6 {
		enqueue(fmt.Sprintf("d%d", i), "start", startPayload(h.image), 0)
	}
	if !h.waitJobs(2*time.Minute, ids...) {
		t.Fatal("the games did not start")
	}
	enqueue("d4", "stop", `{"timeout_seconds": 5}`, 0)
	if !h.waitJobs(time.Minute, ids...) {
		t.Fatal("d4 did not stop")
	}
	pids := map[string]int{}
	for _, g := range []string{"d0", "d1", "d2", "d3", "d5"} {
		res, err := h.raw.ContainerInspect(h.ctx, "galaxy-game-"+h.game(g), client.ContainerInspectOptions{})
		must(t, err)
		pids[g] = res.Container.State.Pid
	}
	phase("6 games started, d4 stopped")

	// Bring the daemon back whatever happens below; the harness's own
	// cleanups (registered earlier, so run later) need it.
	t.Cleanup(func() {
		if a.alive() {
			a.signal(syscall.SIGCONT)
		}
		if _, why := dockerd.Find(); why == "" {
			return // running: never stopped, or started again by the test
		}
		if _, err := d.Start(); err != nil {
			t.Errorf("could not start dockerd again: %v", err)
			return
		}
		if !waitUntil(2*time.Minute, func() bool { return h.ping() }) {
			t.Errorf("dockerd, started again, does not answer")
		}
	})

	// The outage.
	down := time.Now()
	stop := map[bool]syscall.Signal{true: syscall.SIGTERM, false: syscall.SIGKILL}[liveRestore]
	must(t, syscall.Kill(d.Pid, stop))
	if !waitUntil(2*time.Minute, func() bool { return !dockerd.Alive(d.Pid) }) {
		t.Fatalf("dockerd (pid %d) did not exit within 2 minutes of %v", d.Pid, stop)
	}
	phase("dockerd gone (" + stop.String() + ")")
	died := 0
	for _, g := range []string{"d0", "d1"} {
		if !dockerd.Alive(pids[g]) {
			t.Fatalf("%s's engine (pid %d) did not outlive dockerd", g, pids[g])
		}
		must(t, syscall.Kill(pids[g], syscall.SIGKILL))
		died++
	}
	if !waitUntil(30*time.Second, func() bool { return !dockerd.Alive(pids["d0"]) && !dockerd.Alive(pids["d1"]) }) {
		t.Fatal("the SIGKILLed engines did not die")
	}
	// Jobs meet the dead daemon: they must ride it out on their retries
	// (attempts to spare: the backoff doubles from 1 s).
	enqueue("d5", "restart", `{"timeout_seconds": 5}`, 20)
	enqueue("d6", "start", startPayload(h.image), 20)
	// Let the agent try them against the dead daemon at least once.
	waitUntil(20*time.Second, func() bool {
		j5, j6 := h.job(ids[len(ids)-2]), h.job(ids[len(ids)-1])
		return j5.Attempt > 0 && j6.Attempt > 0
	})
	phase("jobs tried during the outage")

	// Freeze the agent, start the daemon, remove containers behind the
	// agent's back before it can reconnect, thaw it.
	a.signal(syscall.SIGSTOP)
	if _, err := d.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	if !waitUntil(2*time.Minute, h.ping) {
		t.Fatal("dockerd, started again, does not answer")
	}
	outage := time.Since(down)
	phase("dockerd answers")
	removed := 0
	for _, g := range []string{"d2", "d3", "d4"} {
		if _, err := h.raw.ContainerRemove(h.ctx, "galaxy-game-"+h.game(g), client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Errorf("remove %s behind the agent's back: %v", g, err)
			continue
		}
		removed++
	}
	a.signal(syscall.SIGCONT)
	phase("containers removed, agent thawed")

	// The agent repairs the records from a relist: no event told it.
	want := map[string]runtime.Status{
		"d0": runtime.StatusStopped, "d1": runtime.StatusStopped,
		"d2": runtime.StatusRemoved, "d3": runtime.StatusRemoved, "d4": runtime.StatusRemoved,
	}
	repaired := waitUntil(time.Minute, func() bool {
		for g, s := range want {
			if r, err := h.store.GetRecord(h.ctx, h.game(g)); err != nil || r.Status != s {
				return false
			}
		}
		return true
	})
	phase("records repaired")

	// The reconnected agent works: jobs, and the new events stream (a
	// container killed behind its back now is seen).
	enqueue("d0", "start", startPayload(h.image), 0)
	enqueue("d1", "remove", `{}`, 0)
	enqueue("d5", "stop", `{"timeout_seconds": 5}`, 0)
	h.waitJobs(2*time.Minute, ids...)
	killed := h.killGames(h.game("d6"))
	stoppedSeen := waitUntil(time.Minute, func() bool {
		r, err := h.store.GetRecord(h.ctx, h.game("d6"))
		return err == nil && r.Status == runtime.StatusStopped
	})
	phase("jobs after the restart done")

	f := h.check(checkOptions{settle: time.Minute})
	violation := func(format string, args ...any) {
		f.Violations++
		t.Logf("VIOLATION: "+format, args...)
	}
	for _, id := range ids {
		if j := h.job(id); j.Status != "succeeded" {
			violation("job %d (%s %s) ended %s after %d attempts: %s", j.ID, j.Kind, j.GameID, j.Status, j.Attempt, deref(j.LastError))
		}
	}
	if !repaired {
		for g, s := range want {
			r, err := h.store.GetRecord(h.ctx, h.game(g))
			if err != nil || r.Status != s {
				violation("game %s: want record %s after the restart, got %s (%v)", g, s, r.Status, err)
			}
		}
	}
	if killed == 1 && !stoppedSeen {
		violation("d6 killed after the restart: its record never became stopped")
	}
	if !a.alive() {
		violation("the agent exited: %v", a.err)
	}
	f.Scenario, f.Rounds = "dockerd restart, containers dying and removed behind its back", 1
	how := "SIGKILL (a crash; live-restore off)"
	if liveRestore {
		how = "SIGTERM (live-restore on)"
	}
	f.Faults = fmt.Sprintf("dockerd %s and started again (%s down), %d engines SIGKILLed by pid while it was down, 2 jobs enqueued during the outage, agent frozen while %d containers were removed behind its back, %d killed after the restart",
		how, outage.Round(100*time.Millisecond), died, removed, killed)
	h.report(f)
}

// ping reports whether dockerd answers.
func (h *harness) ping() bool {
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	return h.eng.Ping(ctx) == nil
}
