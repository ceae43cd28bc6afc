package cli

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/rtmclient"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the current output")

var (
	timeRe = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	xidRe  = regexp.MustCompile(`"xid": ?\d+`)
	ageRe  = regexp.MustCompile(`(?m)  (\d+h)?(\d+m)?\d+(\.\d+)?s$`)
)

// normalise replaces what the database decides (times of now(),
// transaction ids, heartbeat ages) with placeholders.
func normalise(s string) string {
	s = timeRe.ReplaceAllString(s, "<TIME>")
	s = xidRe.ReplaceAllString(s, `"xid": <XID>`)
	return ageRe.ReplaceAllString(s, "  <AGE>")
}

// golden compares got, normalised, with testdata/name; -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = normalise(got)
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// ops runs an operator command against url and checks its exit code.
func ops(t *testing.T, url string, code int, args ...string) result {
	t.Helper()
	r := runCLI(context.Background(), append(args, "--database-url", url)...)
	if r.code != code {
		t.Fatalf("rtmanager %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// TestOperatorCommandsGolden runs every operator command on a database
// seeded with controlled rows; ids are fixed by the order of the inserts,
// times of now() are normalised.
func TestOperatorCommandsGolden(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	pool, err := db.Connect(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	store := db.NewStore(pool, fixedClock{at})

	// Hosts: host-a alive, host-b silent for an hour.
	for _, h := range []string{"host-a", "host-b"} {
		if _, err := store.RegisterHost(ctx, h, "agent-"+h, "v1.2.3"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "UPDATE hosts SET heartbeat_at = now() - interval '1 hour' WHERE host_id = 'host-b'"); err != nil {
		t.Fatal(err)
	}
	// Records: g1 running, g2 stopped (events 1..3).
	for _, g := range []string{"g1", "g2"} {
		if _, err := store.UpdateRecord(ctx, g, func(*runtime.RuntimeRecord, time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
			r, err := runtime.Create(runtime.Placement{GameID: g, HostID: "host-a", EngineEndpoint: runtime.EngineEndpointFor(g),
				StatePath: "/var/lib/rtmanager/state/" + g, DockerNetwork: "galaxy"}, "0123456789abcdef-"+g, "registry.example.com/galaxy/engine:1.4", at)
			return r, outbox.TransitionDetails{Reason: outbox.ReasonJobStart}, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	store = db.NewStore(pool, fixedClock{at.Add(time.Hour)})
	if _, err := store.UpdateRecord(ctx, "g2", func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		next, err := cur.Stop(cur.CurrentContainerID, at)
		code := 137
		// Its crash report, with lines as the agent stores them: sanitised.
		report := &crash.Report{HostID: "host-a", GameID: "g2", ContainerID: cur.CurrentContainerID, ExitCode: &code, OOM: true, ExitedAt: at,
			Output: crash.Output{Truncated: true, Lines: []crash.Line{
				{Stream: crash.Stdout, Text: "tick 41 ok"},
				{Stream: crash.Stderr, Text: crash.Sanitize("\x1b[31mfatal:\x1b[0m out of memory \xff")},
			}}}
		return next, outbox.TransitionDetails{Reason: outbox.ReasonObservedDie, ExitCode: &code, OOM: true, Crash: report}, err
	}); err != nil {
		t.Fatal(err)
	}

	// Jobs through the CLI: 1 start g3 (fails), 2 stop g1 (cancelled), 3
	// the retry of 1.
	golden(t, "jobs_enqueue.txt", ops(t, url, ExitOK, "jobs", "enqueue", "--host", "host-a", "--game", "g3", "--kind", "start",
		"--payload", `{"image_ref":"registry.example.com/galaxy/engine:1.4","env":{"GAME_MODE":"ranked"}}`, "--max-attempts", "3").stdout)
	golden(t, "jobs_enqueue.json", ops(t, url, ExitOK, "jobs", "enqueue", "-o", "json", "--host", "host-a", "--game", "g1", "--kind", "stop",
		"--payload", `{"timeout_seconds":10}`, "--idempotency-key", "stop-g1").stdout)
	golden(t, "jobs_enqueue_again.txt", ops(t, url, ExitOK, "jobs", "enqueue", "--host", "host-a", "--game", "g1", "--kind", "stop",
		"--payload", `{"timeout_seconds":10}`, "--idempotency-key", "stop-g1").stdout)
	golden(t, "jobs_enqueue_invalid.txt", ops(t, url, ExitError, "jobs", "enqueue", "--host", "host-a", "--game", "g1", "--kind", "start",
		"--payload", `{"image":"x"}`).stderr)

	claimed, err := store.ClaimJobs(ctx, "host-a", "agent-host-a", 1, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].ID != 1 {
		t.Fatalf("claim: %+v %v", claimed, err)
	}
	if _, err := store.FinishJob(ctx, claimed[0], "agent-host-a", db.Outcome{Status: job.StatusFailed,
		Error: `image_ref: image not allowed: "registry.example.com/galaxy/engine:1.4" is not in the allow-list`}); err != nil {
		t.Fatal(err)
	}
	golden(t, "jobs_cancel.txt", ops(t, url, ExitOK, "jobs", "cancel", "2").stdout)
	golden(t, "jobs_cancel_finished.txt", ops(t, url, ExitError, "jobs", "cancel", "2").stderr)
	golden(t, "jobs_retry.txt", ops(t, url, ExitOK, "jobs", "retry", "1").stdout)
	golden(t, "jobs_retry_queued.txt", ops(t, url, ExitError, "jobs", "retry", "4").stderr)

	golden(t, "jobs_list.txt", ops(t, url, ExitOK, "jobs", "list").stdout)
	golden(t, "jobs_list_failed.json", ops(t, url, ExitOK, "jobs", "list", "--status", "failed", "-o", "json").stdout)
	golden(t, "jobs_list_none.json", ops(t, url, ExitOK, "jobs", "list", "--game", "nope", "-o", "json").stdout)
	golden(t, "jobs_show.txt", ops(t, url, ExitOK, "jobs", "show", "1").stdout)
	golden(t, "jobs_show.json", ops(t, url, ExitOK, "jobs", "show", "-o", "json", "2").stdout)
	golden(t, "jobs_show_unknown.txt", ops(t, url, ExitNotFound, "jobs", "show", "99").stderr)
	golden(t, "jobs_cancel_unknown.txt", ops(t, url, ExitNotFound, "jobs", "cancel", "99").stderr)

	golden(t, "records_list.txt", ops(t, url, ExitOK, "records", "list").stdout)
	golden(t, "records_list_stopped.json", ops(t, url, ExitOK, "records", "list", "--status", "stopped", "-o", "json").stdout)
	golden(t, "records_show.txt", ops(t, url, ExitOK, "records", "show", "g2").stdout)
	golden(t, "records_show_crash.json", ops(t, url, ExitOK, "records", "show", "g2", "-o", "json").stdout)
	golden(t, "records_show.json", ops(t, url, ExitOK, "records", "show", "g1", "-o", "json").stdout)
	golden(t, "records_show_unknown.txt", ops(t, url, ExitNotFound, "records", "show", "g9").stderr)

	golden(t, "hosts_list.txt", ops(t, url, ExitOK, "hosts", "list").stdout)
	golden(t, "hosts_list.json", ops(t, url, ExitOK, "hosts", "list", "-o", "json").stdout)

	// Events: 3 runtime, job 1 failed, job 2 cancelled.
	wait.For(t, 30*time.Second, "five readable events", func() bool {
		evs, err := store.ReadOutbox(ctx, db.Position{}, 100)
		return err == nil && len(evs) == 5
	})
	golden(t, "events_tail.txt", ops(t, url, ExitOK, "events", "tail").stdout)
	golden(t, "events_tail_2.jsonl", ops(t, url, ExitOK, "events", "tail", "-n", "2", "-o", "json").stdout)
	golden(t, "events_tail_consumer.txt", ops(t, url, ExitOK, "events", "tail", "--consumer", "ops-test").stdout)
	if r := ops(t, url, ExitOK, "events", "tail", "--consumer", "ops-test"); r.stdout != "" {
		t.Fatalf("a consumer's second read printed acknowledged events again:\n%s", r.stdout)
	}
}

func TestOperatorCommandsUsage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := "postgres://rtm@127.0.0.1:1/rtm?connect_timeout=2"
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"jobs"}, ExitUsage, "say what to do"},
		{[]string{"jobs", "frob"}, ExitUsage, "unknown action"},
		{[]string{"jobs", "show", "--database-url", url}, ExitUsage, "exactly one job id"},
		{[]string{"jobs", "show", "x", "--database-url", url}, ExitUsage, "positive number"},
		{[]string{"jobs", "list", "-o", "yaml", "--database-url", url}, ExitUsage, "-o must be table or json"},
		{[]string{"jobs", "list", "--status", "done", "--database-url", url}, ExitUsage, "--status"},
		{[]string{"jobs", "enqueue", "--host", "h", "--database-url", url}, ExitUsage, "required"},
		{[]string{"jobs", "enqueue", "--host", "h", "--game", "g", "--kind", "explode", "--database-url", url}, ExitError, "not a job kind"},
		{[]string{"jobs", "enqueue", "--host", "h", "--game", "g", "--kind", "remove", "--traceparent", "00-abc", "--database-url", url}, ExitUsage, "--traceparent"},
		{[]string{"records", "list", "--status", "gone", "--database-url", url}, ExitUsage, "--status"},
		{[]string{"hosts", "list", "--down-after", "0s", "--database-url", url}, ExitUsage, "--down-after"},
		{[]string{"events"}, ExitUsage, "say what to do"},
		{[]string{"jobs", "list", "--database-url="}, ExitUsage, "RTM_DATABASE_URL"},
		{[]string{"jobs", "list", "--database-url", url}, ExitError, "cannot connect to PostgreSQL"},
		{[]string{"records", "show", "g1", "--database-url", "postgres://rtm:pw@host:port/db"}, ExitError, "database URL is not valid"},
	} {
		r := runCLI(ctx, tc.args...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, r.code, tc.code, r.stderr)
			continue
		}
		oneLine(t, r, tc.want)
	}
}

// TestJobsEnqueueTraceparent: --traceparent is stored with the job, so the
// agent's spans continue the caller's trace.
func TestJobsEnqueueTraceparent(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := ops(t, url, ExitOK, "jobs", "enqueue", "-o", "json", "--host", "host-a", "--game", "g1", "--kind", "remove", "--traceparent", tp)
	var j rtmclient.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if j.Traceparent != tp {
		t.Fatalf("traceparent %q, want %q", j.Traceparent, tp)
	}
	if show := ops(t, url, ExitOK, "jobs", "show", strconv.FormatInt(j.ID, 10)).stdout; !strings.Contains(show, tp) {
		t.Fatalf("jobs show lacks the traceparent:\n%s", show)
	}
}

// A pull job through the CLI: enqueued with its kind and payload; one
// that carries what only a start takes is refused, naming the field.
func TestJobsEnqueuePull(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	r := ops(t, url, ExitOK, "jobs", "enqueue", "-o", "json", "--host", "host-a", "--game", "warm-1", "--kind", "pull",
		"--payload", `{"image_ref":"registry.example.com/galaxy/engine:1.4"}`)
	var j rtmclient.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if j.Kind != rtmclient.KindPull || !strings.Contains(string(j.Payload), "engine:1.4") {
		t.Fatalf("enqueued %+v", j)
	}
	bad := ops(t, url, ExitError, "jobs", "enqueue", "--host", "host-a", "--game", "warm-1", "--kind", "pull",
		"--payload", `{"image_ref":"registry.example.com/galaxy/engine:1.4","env":{"A":"1"}}`)
	if !strings.Contains(bad.stderr, `"env"`) {
		t.Fatalf("a pull with env: %q, want an error naming env", bad.stderr)
	}
}

func TestOperatorCommandsOnAnUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	r := runCLI(context.Background(), "jobs", "list", "--database-url", pgtest.EmptyURL(t))
	if r.code != ExitError {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	oneLine(t, r, "rtmanager migrate up")
}

// TestEventsTailFollow: --follow prints events committed after it
// started, and stops cleanly when interrupted.
func TestEventsTailFollow(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pool, err := db.Connect(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	for _, consumer := range []string{"", "ops-follow"} {
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		done := make(chan int, 1)
		args := []string{"events", "tail", "--follow", "--poll-interval", "50ms", "-o", "json", "--database-url", url}
		if consumer != "" {
			args = append(args, "--consumer", consumer)
		}
		go func() { done <- run(ctx, args, &env{stdout: out, stderr: out}) }()
		j, _, err := store.InsertJob(context.Background(), db.NewJob{HostID: "host-a", GameID: "g-" + consumer, Kind: job.KindStop})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.CancelJob(context.Background(), j.ID); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 30*time.Second, "the cancelled job's event", func() bool {
			return strings.Contains(out.String(), `"game_id":"g-`+consumer+`"`)
		})
		cancel()
		if code := <-done; code != ExitOK {
			t.Fatalf("follow ended with %d: %s", code, out.String())
		}
	}
}
