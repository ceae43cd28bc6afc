package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// created is the decision of a start that created container "c-1".
func created(gameID string) func(*runtime.RuntimeRecord, time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
	return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		r, err := runtime.Create(runtime.Placement{GameID: gameID, HostID: hostID, EngineEndpoint: "http://e:8080",
			StatePath: "/srv/state/" + gameID, DockerNetwork: "galaxy"}, "c-1", "engine:1", at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart, JobID: 1, RequestedByJob: true}, err
	}
}

// TestFailureCommitsTheRecordChange: an executor that changed the world
// and fails for good (an engine started but not ready) gets its record
// change committed with the failure, and its AfterCommit run; a refused
// change does not keep the failure from being recorded; a failure that
// is retried commits nothing.
func TestFailureCommitsTheRecordChange(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var after atomic.Int64
	notReady := job.Permanent(fmt.Errorf("%w: unhealthy", job.ErrNotReady))
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		count := func(context.Context) error { after.Add(1); return nil }
		switch task.Spec.GameID {
		case "fail-recorded":
			return worker.Result{Record: created(task.Spec.GameID), AfterCommit: count}, notReady
		case "fail-refused":
			refuse := func(*runtime.RuntimeRecord, time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
				return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, runtime.ErrNotFound
			}
			return worker.Result{Record: refuse, AfterCommit: count}, notReady
		default: // retried once, then succeeds without a change
			if task.Job.Attempt == 1 {
				return worker.Result{Record: created(task.Spec.GameID), AfterCommit: count}, errors.New("docker hiccup")
			}
			return worker.Result{}, nil
		}
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	recorded := insert(t, s, "fail-recorded", "stop", `{}`, 0)
	j := waitStatus(t, s, recorded, job.StatusFailed)
	if j.Attempt != 1 || j.LastError != notReady.Error() {
		t.Fatalf("job %+v", j)
	}
	rec, err := s.GetRecord(context.Background(), "fail-recorded")
	if err != nil || rec.Status != runtime.StatusRunning || rec.CurrentContainerID != "c-1" {
		t.Fatalf("record %+v, %v: want the start committed with the failure", rec, err)
	}
	if got := gameEvents(t, s, "fail-recorded"); !slices.Equal(got, []outbox.Type{outbox.TypeRuntimeRunning, outbox.TypeJobFailed}) {
		t.Fatalf("events %v", got)
	}
	if after.Load() != 1 {
		t.Fatalf("AfterCommit ran %d times, want once", after.Load())
	}

	refused := insert(t, s, "fail-refused", "stop", `{}`, 0)
	if j := waitStatus(t, s, refused, job.StatusFailed); j.LastError != notReady.Error() {
		t.Fatalf("job %+v", j)
	}
	if got := gameEvents(t, s, "fail-refused"); !slices.Equal(got, []outbox.Type{outbox.TypeJobFailed}) {
		t.Fatalf("events %v", got)
	}

	retried := insert(t, s, "retried", "stop", `{}`, 3)
	if j := waitStatus(t, s, retried, job.StatusSucceeded); j.Attempt != 2 {
		t.Fatalf("job %+v", j)
	}
	if _, err := s.GetRecord(context.Background(), "retried"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("a retried attempt's record change was committed: %v", err)
	}
	if after.Load() != 1 {
		t.Fatalf("AfterCommit ran %d times, want once (only the recorded failure's)", after.Load())
	}
}

// gameEvents returns the event types of a game, in order.
func gameEvents(t testing.TB, s *db.Store, gameID string) []outbox.Type {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT type FROM outbox WHERE game_id = $1 ORDER BY id`, gameID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var types []outbox.Type
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatal(err)
		}
		types = append(types, outbox.Type(typ))
	}
	return types
}
