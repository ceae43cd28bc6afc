package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/pgcluster"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// TestPostgresRestart runs a burst of jobs and Docker events while the
// agent's connections are terminated (pg_terminate_backend), then stops
// the whole PostgreSQL server in the middle of the next burst (containers
// die behind the agent's back while it is down), starts it again on the
// same data directory, and terminates the connections once more during a
// third burst. It uses a cluster of its own: the shared test cluster must
// not go away under other tests. Every job must end succeeded, and the
// agent must ride out the outage without exiting.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	dockertest.Client(t) // skip (or fail in CI) before starting anything without Docker
	dir, err := os.MkdirTemp("", "rtm-faults-pg-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	logPath := filepath.Join(t.TempDir(), "postgres.log")
	logf, err := os.Create(logPath)
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- PostgreSQL's log (last 40 lines) ---\n%s", tail(logPath, 40))
		}
		_ = logf.Close()
	})
	opts := pgcluster.Options{DataDir: dir, Log: logf, Settings: map[string]string{"fsync": "off", "max_connections": "100"}}
	cluster, err := pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start a PostgreSQL of the test's own: %v", err)
	}
	// Stops whichever server runs at the end (Stop of a stopped one
	// returns at once).
	t.Cleanup(func() { _ = cluster.Stop() })

	h := newHarness(t, harnessOptions{dbURL: cluster.URL("postgres")})
	a := h.startAgent()
	// The agent migrates the database; the consumer needs its tables.
	if !waitUntil(time.Minute, func() bool {
		_, err := h.pool.Exec(h.ctx, "SELECT 1 FROM outbox_consumers LIMIT 1")
		return err == nil
	}) {
		t.Fatal("the agent did not migrate the database")
	}
	h.startConsumer()

	begin := time.Now()
	phase := func(what string) { t.Logf("%s: %s", time.Since(begin).Round(time.Millisecond), what) }
	const games = 6
	game := func(i int) string { return h.game(fmt.Sprintf("p%d", i)) }
	var ids []int64
	burst := func(kind, payload string) []int64 {
		var b []int64
		for i := range games {
			b = append(b, h.enqueue(game(i), kind, payload, 0))
		}
		ids = append(ids, b...)
		return b
	}
	// underWay waits until the agent holds a running job of the burst, or
	// the burst is over: the moment to strike.
	underWay := func(b []int64) {
		waitUntil(time.Minute, func() bool {
			return h.runningOf(a) > 0 || h.waitJobs(0, b...)
		})
	}
	terminate := func() int {
		var n int
		if !waitUntil(30*time.Second, func() bool {
			return h.pool.QueryRow(h.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n) == nil
		}) {
			t.Fatal("could not terminate the agent's connections")
		}
		return n
	}

	// Fault 1: terminate every other connection in the middle of a burst
	// of starts; containers die behind the agent's back meanwhile.
	b := burst("start", startPayload(h.image))
	underWay(b)
	terminated := terminate()
	phase("terminated 1")
	h.waitJobs(time.Minute, b[:2]...)
	killed := h.killGames(game(0), game(1))
	phase("killed 1")

	// Fault 2: stop the server in the middle of a burst of restarts, kill
	// more containers while it is down, start it again.
	b = burst("restart", `{"timeout_seconds": 5}`)
	underWay(b)
	phase("stopping")
	must(t, cluster.Stop())
	phase("stopped")
	killed += h.killGames(game(2), game(3))
	outage := time.NewTimer(3 * time.Second) // the outage's length: fault timing
	<-outage.C
	cluster, err = pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	phase("started")
	restarts := 0
	if !a.alive() {
		// Like systemd's Restart=on-failure.
		restarts++
		t.Logf("the agent exited during the outage (code %d); starting it again", a.exitCode())
		a = h.startAgent()
	}

	// Fault 3: terminate the connections again during a burst of stops.
	b = burst("stop", `{"timeout_seconds": 5}`)
	underWay(b)
	terminated += terminate()
	phase("terminated 2")

	h.waitJobs(time.Minute, ids...)
	phase("jobs done")
	f := h.check(checkOptions{settle: time.Minute})
	for _, id := range ids {
		if j := h.job(id); j.Status != "succeeded" {
			f.Violations++
			t.Logf("VIOLATION: job %d (%s %s) ended %s: %s", j.ID, j.Kind, j.GameID, j.Status, deref(j.LastError))
		}
	}
	if restarts > 0 {
		f.Violations++
		t.Logf("VIOLATION: the agent did not ride out the database outage")
	}
	if !a.alive() {
		f.Violations++
		t.Logf("VIOLATION: the agent exited: %v", a.err)
	}
	f.Scenario, f.Rounds = "PostgreSQL restart and terminated connections", 1
	f.Faults = fmt.Sprintf("%d connections terminated in 2 rounds, 1 server stop of 3 s, %d containers killed behind the agent's back", terminated, killed)
	h.report(f)
}

// killGames SIGKILLs the running containers of games through the raw
// Docker API (behind the agent's back; the database may be down) and
// returns how many it killed.
func (h *harness) killGames(games ...string) int {
	h.t.Helper()
	n := 0
	for _, g := range games {
		c, err := h.eng.InspectContainer(h.ctx, "galaxy-game-"+g)
		if err != nil || !c.Running {
			continue
		}
		if _, err := h.raw.ContainerKill(h.ctx, c.ID, client.ContainerKillOptions{Signal: "SIGKILL"}); err == nil {
			n++
		}
	}
	return n
}
