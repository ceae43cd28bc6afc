package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const hostID = "host-w"

func newStore(t testing.TB) *db.Store {
	t.Helper()
	return db.NewStore(pgtest.Pool(t), nil)
}

// testConfig is fast: short leases and polls, millisecond retries.
func testConfig(owner string) worker.Config {
	p := job.DefaultPolicy()
	p.StateRoot = "/srv/state"
	return worker.Config{
		HostID: hostID, Owner: owner, Concurrency: 4,
		LeaseDuration: 2 * time.Second, LeaseRenewInterval: 100 * time.Millisecond,
		PollInterval: 50 * time.Millisecond, UseListen: true, Policy: p,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 10 * time.Millisecond,
		DrainTimeout: 5 * time.Second,
	}
}

// startWorker runs w until the test ends (or stop is called) and checks
// that Run returns nil.
func startWorker(t testing.TB, w *worker.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// insert enqueues a job with plain SQL, as the Game Master does.
func insert(t testing.TB, s *db.Store, gameID, kind, payload string, maxAttempts int) int64 {
	t.Helper()
	var id int64
	err := s.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind, payload, max_attempts) VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id`,
		hostID, gameID, kind, payload, maxAttempts).Scan(&id)
	if err != nil {
		t.Fatalf("insert job: %v", err)
	}
	return id
}

func waitStatus(t testing.TB, s *db.Store, id int64, want job.Status) db.Job {
	t.Helper()
	var j db.Job
	wait.For(t, 30*time.Second, fmt.Sprintf("job %d %s", id, want), func() bool {
		var err error
		if j, err = s.GetJob(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return j.Status == want
	})
	return j
}

// outcomeEvents returns the job outcome events of job id.
func outcomeEvents(t testing.TB, s *db.Store, id int64) []outbox.Type {
	t.Helper()
	var types []outbox.Type
	rows, err := s.Pool().Query(context.Background(), `SELECT type FROM outbox WHERE job_id = $1 ORDER BY id`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatal(err)
		}
		types = append(types, outbox.Type(typ))
	}
	return types
}

func TestSucceedsAndAppendsOutcomeEvent(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var calls atomic.Int64
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		calls.Add(1)
		if task.Spec.Kind != job.KindStop || task.HostID != hostID || task.Network != "galaxy" {
			return worker.Result{}, job.Permanent(fmt.Errorf("unexpected task %+v", task))
		}
		return worker.Result{}, nil
	})
	cfg := testConfig("owner-1")
	cfg.Network = "galaxy"
	w := worker.New(s, exec, cfg)
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{"timeout_seconds": 3}`, 0)
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 1 || j.LeaseOwner != "" || j.FinishedAt == nil || calls.Load() != 1 {
		t.Fatalf("job %+v, calls %d", j, calls.Load())
	}
	if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobSucceeded {
		t.Fatalf("outcome events %v", got)
	}
}

func TestRetriesTransientErrorsThenSucceeds(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var calls atomic.Int64
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		if calls.Add(1) < 3 {
			return worker.Result{}, errors.New("daemon busy")
		}
		return worker.Result{}, nil
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	j := waitStatus(t, s, id, job.StatusSucceeded)
	if j.Attempt != 3 || calls.Load() != 3 {
		t.Fatalf("attempt %d, calls %d", j.Attempt, calls.Load())
	}
	// Counters move a moment after the commit the test has just seen.
	wait.For(t, 10*time.Second, "the success counted", func() bool { return w.Stats().Succeeded == 1 })
	if st := w.Stats(); st.Retried != 2 || st.Succeeded != 1 {
		t.Fatalf("stats %+v", st)
	}
	if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobSucceeded {
		t.Fatalf("outcome events %v (retries must not emit outcomes)", got)
	}
}

func TestFailsAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		return worker.Result{}, errors.New("daemon busy")
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 2)
	j := waitStatus(t, s, id, job.StatusFailed)
	if j.Attempt != 2 || j.LastError != "attempt 2 of 2: daemon busy" {
		t.Fatalf("job %+v", j)
	}
	if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobFailed {
		t.Fatalf("outcome events %v", got)
	}
}

func TestPermanentErrorsFailAtOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var calls atomic.Int64
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		calls.Add(1)
		return worker.Result{}, job.Permanent(errors.New("foreign container squats the name"))
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	cases := []struct{ game, kind, payload, want string }{
		{"g1", "explode", `{}`, "unknown job kind"},
		{"g2", "stop", `{"timeout_seconds": "soon"}`, "invalid job payload"},
		{"g3", "stop", `{"bogus": 1}`, "invalid job payload"},
		{"../etc", "stop", `{}`, "invalid game id"},
		{"g4", "remove", `{}`, "foreign container squats the name"},
	}
	for _, c := range cases {
		id := insert(t, s, c.game, c.kind, c.payload, 0)
		j := waitStatus(t, s, id, job.StatusFailed)
		if j.Attempt != 1 || !contains(j.LastError, c.want) {
			t.Errorf("%s/%s: attempt %d, error %q; want one attempt and %q", c.game, c.kind, j.Attempt, j.LastError, c.want)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("executor called %d times; only the valid job may reach it", calls.Load())
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestCancelQueuedJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := insert(t, s, "g1", "stop", `{}`, 0) // no worker runs
	j, err := s.CancelJob(context.Background(), id)
	if err != nil || j.Status != job.StatusCancelled {
		t.Fatalf("cancel: %+v, %v", j, err)
	}
	if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobCancelled {
		t.Fatalf("outcome events %v", got)
	}
	if _, err := s.CancelJob(context.Background(), id); !errors.Is(err, db.ErrJobFinished) {
		t.Fatalf("second cancel: %v, want ErrJobFinished", err)
	}
	if _, err := s.CancelJob(context.Background(), 999999); !errors.Is(err, db.ErrJobNotFound) {
		t.Fatalf("cancel of unknown job: %v", err)
	}
}

// blockingExec blocks every attempt until its context ends and reports the
// cause through started/ended.
type blockingExec struct {
	started chan int64
	causes  chan error
}

func newBlockingExec() *blockingExec {
	return &blockingExec{started: make(chan int64, 16), causes: make(chan error, 16)}
}

func (b *blockingExec) Execute(ctx context.Context, t worker.Task) (worker.Result, error) {
	b.started <- t.Job.ID
	<-ctx.Done()
	b.causes <- context.Cause(ctx)
	return worker.Result{}, ctx.Err()
}

func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	exec := newBlockingExec()
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	<-exec.started
	j, err := s.CancelJob(context.Background(), id)
	if err != nil || j.Status != job.StatusRunning || j.CancelRequestedAt == nil {
		t.Fatalf("cancel request: %+v, %v", j, err)
	}
	j = waitStatus(t, s, id, job.StatusCancelled)
	if !contains(j.LastError, "cancelled while running") {
		t.Fatalf("last error %q", j.LastError)
	}
	if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobCancelled {
		t.Fatalf("outcome events %v", got)
	}
}

func TestWakesOnNotifyWithoutPolling(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg := testConfig("owner-1")
	cfg.PollInterval = time.Hour
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	wait.For(t, 10*time.Second, "LISTEN connection", w.Listening)
	for i := range 3 {
		id := insert(t, s, fmt.Sprintf("g%d", i), "stop", `{}`, 0)
		waitStatus(t, s, id, job.StatusSucceeded)
	}
	if w.Stats().Wakeups < 3 {
		t.Fatalf("stats %+v", w.Stats())
	}
}

func TestPollingOnlyForTransactionPoolers(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg := testConfig("owner-1")
	cfg.UseListen = false
	cfg.PollInterval = 20 * time.Millisecond
	w := worker.New(s, worker.Noop, cfg)
	startWorker(t, w)
	id := insert(t, s, "g1", "stop", `{}`, 0)
	waitStatus(t, s, id, job.StatusSucceeded)
	if w.Listening() || w.Stats().Wakeups != 0 {
		t.Fatalf("listening %v, stats %+v", w.Listening(), w.Stats())
	}
}

func TestIgnoresOtherHostsJobs(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	w := worker.New(s, worker.Noop, testConfig("owner-1"))
	startWorker(t, w)
	var other int64
	if err := s.Pool().QueryRow(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind) VALUES ('host-other', 'g9', 'stop') RETURNING id`).Scan(&other); err != nil {
		t.Fatal(err)
	}
	mine := insert(t, s, "g1", "stop", `{}`, 0)
	waitStatus(t, s, mine, job.StatusSucceeded)
	if j, _ := s.GetJob(context.Background(), other); j.Status != job.StatusQueued {
		t.Fatalf("other host's job %+v", j)
	}
}

// TestManyWorkersKeepPerGameOrder runs 8 workers over 5,000 jobs of 100
// games: every job runs exactly once, the jobs of one game one at a time in
// insertion order, and no job is left running.
func TestManyWorkersKeepPerGameOrder(t *testing.T) {
	t.Parallel()
	checkManyWorkersKeepPerGameOrder(t, 0)
}

// TestManyWorkersKeepPerGameOrderWithPrefetch: claims larger than the free
// slots, held in each worker's buffer, keep the same guarantees.
func TestManyWorkersKeepPerGameOrderWithPrefetch(t *testing.T) {
	t.Parallel()
	checkManyWorkersKeepPerGameOrder(t, 64)
}

func checkManyWorkersKeepPerGameOrder(t *testing.T, prefetch int) {
	const workers, games, jobs = 8, 100, 5000
	s := newStore(t)
	if _, err := s.Pool().Exec(context.Background(),
		`INSERT INTO jobs (host_id, game_id, kind) SELECT $1, 'g' || (i % $2), 'stop' FROM generate_series(1, $3) i`,
		hostID, games, jobs); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[int64]int{}
	last := map[string]int64{}
	active := map[string]bool{}
	var violations []string
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		g, id := task.Job.GameID, task.Job.ID
		mu.Lock()
		runs[id]++
		if active[g] {
			violations = append(violations, fmt.Sprintf("game %s: job %d ran while another of its jobs ran", g, id))
		}
		if id <= last[g] {
			violations = append(violations, fmt.Sprintf("game %s: job %d ran after job %d", g, id, last[g]))
		}
		last[g] = id
		active[g] = true
		mu.Unlock()
		// Give an overlapping run of the same game a chance to show.
		runtime.Gosched()
		mu.Lock()
		active[g] = false
		mu.Unlock()
		return worker.Result{}, nil
	})
	var all []*worker.Worker
	var stops []func()
	for i := range workers {
		cfg := testConfig(fmt.Sprintf("owner-%d", i))
		cfg.Prefetch = prefetch
		w := worker.New(s, exec, cfg)
		all = append(all, w)
		stops = append(stops, startWorker(t, w))
	}
	wait.For(t, 5*time.Minute, "all jobs finished", func() bool {
		var n int
		if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM jobs WHERE status <> 'succeeded'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	// A worker counts a success after its commit, so the last count may
	// trail the table; Run returns only once its jobs have ended.
	for _, stop := range stops {
		stop()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	if len(runs) != jobs {
		t.Fatalf("%d distinct jobs ran, want %d", len(runs), jobs)
	}
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %d ran %d times", id, n)
		}
	}
	var total int64
	for _, w := range all {
		total += w.Stats().Succeeded
	}
	if total != jobs {
		t.Fatalf("workers report %d successes, want %d", total, jobs)
	}
	// Exactly one outcome event per job, and each game's events in the
	// outbox's (commit) order are in the game's job order.
	var events, distinct int
	if err := s.Pool().QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT job_id) FROM outbox WHERE type = $1`, string(outbox.TypeJobSucceeded)).Scan(&events, &distinct); err != nil {
		t.Fatal(err)
	}
	if events != jobs || distinct != jobs {
		t.Fatalf("%d outcome events for %d jobs, want %d", events, distinct, jobs)
	}
	rows, err := s.Pool().Query(context.Background(), `SELECT game_id, job_id FROM outbox ORDER BY xid, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	lastEvent := map[string]int64{}
	for rows.Next() {
		var g string
		var id int64
		if err := rows.Scan(&g, &id); err != nil {
			t.Fatal(err)
		}
		if id <= lastEvent[g] {
			t.Errorf("game %s: outcome of job %d committed after that of job %d", g, id, lastEvent[g])
		}
		lastEvent[g] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// quiet discards the worker's logs in benchmarks.
var quiet = slog.New(slog.DiscardHandler)

// TestErrorsTextCannotHoldAreStoredClean: an executor's error quotes
// daemon output, which may hold a NUL byte or invalid UTF-8 (PostgreSQL's
// text and jsonb take neither), or be long enough to be cut inside a
// character. Each must still end its job, with a valid message and one
// event, rather than make the outcome's write fail.
func TestErrorsTextCannotHoldAreStoredClean(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	long := "x" + strings.Repeat("é", 3000) // cut at 4 KiB, inside an "é"
	exec := worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
		if task.Spec.GameID == "long" {
			return worker.Result{}, job.Permanent(errors.New(long))
		}
		return worker.Result{}, job.Permanent(errors.New("daemon said a\x00b and \xff\xfe"))
	})
	w := worker.New(s, exec, testConfig("owner-1"))
	startWorker(t, w)
	for _, game := range []string{"bytes", "long"} {
		id := insert(t, s, game, "stop", `{}`, 0)
		j := waitStatus(t, s, id, job.StatusFailed)
		if !utf8.ValidString(j.LastError) || strings.ContainsRune(j.LastError, 0) {
			t.Errorf("%s: stored error %q is not clean text", game, j.LastError)
		}
		if game == "bytes" && !strings.Contains(j.LastError, "daemon said a\uFFFDb and \uFFFD") {
			t.Errorf("%s: stored error %q lost what it said", game, j.LastError)
		}
		if game == "long" && (len(j.LastError) > 4<<10+len("… (truncated)") || !strings.HasPrefix(j.LastError, "xéé")) {
			t.Errorf("%s: stored error of %d bytes: %q…", game, len(j.LastError), j.LastError[:20])
		}
		if got := outcomeEvents(t, s, id); len(got) != 1 || got[0] != outbox.TypeJobFailed {
			t.Errorf("%s: outcome events %v", game, got)
		}
	}
}
