// Package nofight runs every writer of runtime records at once — the job
// worker, the events watcher, the reconciler and the cleanup sweeper, the
// last two on very short periods — through a churn of lifecycle jobs on
// real Docker and PostgreSQL, and checks from the outbox that they never
// fight: no repair of a record that was right, no orphan report of a
// container a job was creating, and every change reported once, with its
// cause (reasons_test.go: the same, job kind by job kind).
package nofight_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestWritersNeverFight(t *testing.T) {
	// Stopped games become due for cleanup at once: the sweeper runs every
	// second and must keep its hands off every game with a job to come.
	a := startAgent(t, agentOptions{ReconcileInterval: 20 * time.Millisecond, Sweep: true})

	// Every game runs the same script; the jobs of all games interleave.
	const games = 8
	script := []struct {
		kind    job.Kind
		payload string
		want    string // the job's runtime event
	}{
		{job.KindStart, fmt.Sprintf(`{"image_ref": %q}`, a.image), "running(job_start)"},
		{job.KindStop, `{"timeout_seconds": 5}`, "stopped(job_stop)"},
		{job.KindStart, fmt.Sprintf(`{"image_ref": %q}`, a.image), "running(job_start)"},
		{job.KindRestart, `{"timeout_seconds": 5}`, "running(job_restart)"},
		{job.KindStop, `{"timeout_seconds": 5}`, "stopped(job_stop)"},
	}
	gameID := func(g int) string { return fmt.Sprintf("g%d-%s", g, a.suffix) }
	var ids []int64
	for step := range script {
		for g := range games {
			ids = append(ids, a.insert(gameID(g), script[step].kind, script[step].payload))
		}
	}
	a.waitSucceeded(4*time.Minute, ids)
	// The sweeper removes the games once their last job is done; the
	// reconciler, every 20 ms, passes over the settled state dozens of
	// times meanwhile.
	wait.For(t, time.Minute, "every stopped game swept", func() bool {
		recs, err := a.store.ListRecords(a.ctx, a.hostID, runtime.StatusStopped)
		return err == nil && len(recs) == 0
	})

	var want []string
	for _, s := range script {
		want = append(want, s.want)
	}
	want = append(want, "removed(cleanup)")
	for game, evs := range a.events() {
		var got []string
		for _, ev := range evs {
			switch {
			case ev.Type == outbox.TypeContainerOrphaned:
				t.Errorf("orphan reported while only jobs changed the host: %s", ev.Payload)
			case ev.rt.ToStatus == "":
				continue
			case ev.rt.Reason.IsJob() != (ev.rt.JobID != nil && *ev.rt.JobID == ev.JobID && ev.JobID != 0):
				t.Errorf("game %s: %s names job %v (row: %d)", game, ev, ev.rt.JobID, ev.JobID)
			}
			got = append(got, fmt.Sprintf("%s(%s)", ev.rt.ToStatus, ev.rt.Reason))
		}
		// Anything but the script's changes and the final cleanup would be
		// a writer reporting another's change: a repair (reconcile_*) of a
		// record that was right, or a job's change as observed_*.
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s: events %v; want %v", game, got, want)
		}
	}
	if n := countContainers(t, a); n != 0 {
		t.Errorf("%d containers left after the sweep", n)
	}
}

func countContainers(t *testing.T, a *agent) int {
	t.Helper()
	cs, err := a.eng.ListManaged(a.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}
