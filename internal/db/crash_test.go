package db_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

// TestCrashReportsAreWrittenWithTheExitAndPruned: a crash report commits
// with its stop transition (naming its event), only a stop carries one,
// and a game keeps its last crash.KeepPerGame reports.
func TestCrashReportsAreWrittenWithTheExitAndPruned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := db.NewStore(pgtest.Pool(t), nil)
	const g = "crashy"
	report := func(i int) *crash.Report {
		code := i
		return &crash.Report{HostID: "h", GameID: g, ContainerID: "c", ExitCode: &code, ExitedAt: time.Now(),
			Output: crash.Output{Lines: []crash.Line{{Stream: crash.Stderr, Text: fmt.Sprintf("crash %d", i)}}}}
	}
	step := func(i int, stop bool) db.RecordChange {
		ch, err := store.UpdateRecord(ctx, g, func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			if cur == nil {
				r, err := runtime.Create(runtime.Placement{GameID: g, HostID: "h", EngineEndpoint: runtime.EngineEndpointFor(g),
					StatePath: "/s/" + g, DockerNetwork: "n"}, "c", "engine:1", at)
				return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart, JobID: 1}, err
			}
			if stop {
				next, err := cur.Stop("c", at)
				return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie, Crash: report(i)}, err
			}
			next, err := cur.ObserveStart("c", at)
			// A crash on a start is not an exit: ignored.
			return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedStart, Crash: report(-i)}, err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	step(0, false)
	var last db.RecordChange
	for i := 1; i <= crash.KeepPerGame+2; i++ {
		last = step(i, true)
		step(i, false)
	}
	rs, err := store.CrashReports(ctx, g, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != crash.KeepPerGame {
		t.Fatalf("%d reports kept, want %d", len(rs), crash.KeepPerGame)
	}
	for i, r := range rs {
		want := crash.KeepPerGame + 2 - i
		if r.ExitCode == nil || *r.ExitCode != want || len(r.Output.Lines) != 1 || r.Output.Lines[0].Text != fmt.Sprintf("crash %d", want) {
			t.Fatalf("report %d: %+v, want the crash %d", i, r, want)
		}
	}
	if rs[0].EventID != last.EventID {
		t.Errorf("newest report names event %d, its stop was %d", rs[0].EventID, last.EventID)
	}
}
