package faults

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/pgcluster"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// TestPostgresRestart runs a burst of jobs and Docker events while the
// agent's connections are terminated (pg_terminate_backend) and then the
// whole PostgreSQL server is stopped and started again. It uses a cluster
// of its own: the shared test cluster must not go away under other tests.
//
// Not finished: the server goes away after pg_terminate_backend in this
// harness (under investigation), so it runs only with
// RTM_TEST_PG_RESTART=1 and reports no figures in CI yet.
func TestPostgresRestart(t *testing.T) {
	if os.Getenv("RTM_TEST_PG_RESTART") != "1" {
		t.Skip("unfinished: set RTM_TEST_PG_RESTART=1 to run it (see the README's fault-injection section)")
	}
	t.Parallel()
	dockertest.Client(t) // skip (or fail in CI) before starting anything without Docker
	dir, err := os.MkdirTemp("", "rtm-faults-pg-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := pgcluster.Options{DataDir: dir, Settings: map[string]string{"fsync": "off", "max_connections": "100"}}
	cluster, err := pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start a PostgreSQL of the test's own: %v", err)
	}
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

	const games = 6
	var ids []int64
	for i := range games {
		ids = append(ids, h.enqueue(h.game(fmt.Sprintf("p%d", i)), "start", startPayload(h.image), 0))
	}
	// Fault 1: terminate every other connection once jobs are under way.
	waitUntil(time.Minute, func() bool { return h.runningOf(a) > 0 || h.job(ids[0]).Status == "succeeded" })
	var terminated int
	must(t, h.pool.QueryRow(h.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&terminated))
	// Containers die behind the agent's back meanwhile.
	killed := h.killGames(ids[:2])
	for i := range games {
		ids = append(ids, h.enqueue(h.game(fmt.Sprintf("p%d", i)), "restart", `{"timeout_seconds": 5}`, 0))
	}

	// Fault 2: stop the server in the middle of the burst, kill more
	// containers while it is down, start it again.
	waitUntil(30*time.Second, func() bool { return h.runningOf(a) > 0 })
	must(t, cluster.Stop())
	killed += h.killGames(ids[2:4])
	outage := time.NewTimer(3 * time.Second) // the outage's length: fault timing
	<-outage.C
	cluster, err = pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	restarts := 0
	if !a.alive() {
		// Like systemd's Restart=on-failure.
		restarts++
		t.Logf("the agent exited during the outage (code %d); starting it again", a.exitCode())
		a = h.startAgent()
	}
	for i := range games {
		ids = append(ids, h.enqueue(h.game(fmt.Sprintf("p%d", i)), "stop", `{"timeout_seconds": 5}`, 0))
	}
	h.waitJobs(2*time.Minute, ids...)
	f := h.check(checkOptions{})
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
	f.Faults = fmt.Sprintf("%d connections terminated, 1 server stop of 3 s, %d containers killed behind the agent's back", terminated, killed)
	h.report(f)
}

// killGames SIGKILLs the containers of the jobs' games through the raw
// Docker API (behind the agent's back) and returns how many it killed.
func (h *harness) killGames(ids []int64) int {
	h.t.Helper()
	n := 0
	for _, id := range ids {
		j := h.job(id)
		c, err := h.eng.InspectContainer(h.ctx, "galaxy-game-"+j.GameID)
		if err != nil || !c.Running {
			continue
		}
		if _, err := h.raw.ContainerKill(h.ctx, c.ID, client.ContainerKillOptions{Signal: "SIGKILL"}); err == nil {
			n++
		}
	}
	return n
}
