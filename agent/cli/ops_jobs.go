package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/rtmclient"
)

const jobActions = "enqueue, list, show ID, cancel ID or retry ID"

func cmdJobs(ctx context.Context, e *env, args []string) int {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintf(e.stdout, "Usage: rtmanager jobs %s [flags]; `rtmanager jobs <action> --help` lists the flags\n", jobActions)
		return ExitOK
	}
	if len(args) == 0 {
		return unknownAction(e, "jobs", args, jobActions)
	}
	switch args[0] {
	case "enqueue":
		return jobsEnqueue(ctx, e, args[1:])
	case "list":
		return jobsList(ctx, e, args[1:])
	case "show":
		return jobsShow(ctx, e, args[1:])
	case "cancel":
		return jobsCancel(ctx, e, args[1:])
	case "retry":
		return jobsRetry(ctx, e, args[1:])
	default:
		return unknownAction(e, "jobs", args, jobActions)
	}
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "help" }

func jobsEnqueue(ctx context.Context, e *env, args []string) int {
	var req rtmclient.JobRequest
	var kind, payload, payloadFile, runAfter, traceparent string
	c, code, ok := parseOps(e, "jobs enqueue", "--host HOST --game GAME --kind KIND [--payload JSON | --payload-file FILE] [flags]", args, func(fs *flag.FlagSet) {
		fs.StringVar(&req.HostID, "host", "", "host whose agent runs the job (required)")
		fs.StringVar(&req.GameID, "game", "", "game id (required)")
		fs.StringVar(&kind, "kind", "", "start, stop, restart, remove, change_image or pull (required)")
		fs.StringVar(&payload, "payload", "{}", "the JSON payload")
		fs.StringVar(&payloadFile, "payload-file", "", "a file holding the JSON payload; - reads standard input")
		fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "enqueue at most one job of the game with this key")
		fs.IntVar(&req.MaxAttempts, "max-attempts", 0, "attempts before the job fails, 1..100; 0 takes the agent's default")
		fs.StringVar(&runAfter, "run-after", "", "delay: a duration from now (90s) or an RFC 3339 time")
		fs.StringVar(&traceparent, "traceparent", "", "W3C trace context (00-<trace id>-<span id>-<flags>) the agent's spans continue")
	})
	if !ok {
		return code
	}
	if code, ok := c.noArgs(); !ok {
		return code
	}
	if req.HostID == "" || req.GameID == "" || kind == "" {
		return usageError(e, c.name, fmt.Errorf("--host, --game and --kind are required"))
	}
	if payloadFile != "" {
		var b []byte
		var err error
		if payloadFile == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(payloadFile)
		}
		if err != nil {
			return usageError(e, c.name, fmt.Errorf("--payload-file: %w", err))
		}
		payload = string(b)
	}
	if runAfter != "" {
		if d, err := time.ParseDuration(runAfter); err == nil {
			req.RunAfter = time.Now().Add(d)
		} else if t, err := time.Parse(time.RFC3339, runAfter); err == nil {
			req.RunAfter = t
		} else {
			return usageError(e, c.name, fmt.Errorf("--run-after must be a duration (90s) or an RFC 3339 time, got %q", runAfter))
		}
	}
	if traceparent != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return usageError(e, c.name, fmt.Errorf("--traceparent must be a W3C traceparent, 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, got %q", traceparent))
		}
	}
	req.Payload = rtmclient.RawPayload{JobKind: rtmclient.Kind(kind), JSON: json.RawMessage(payload)}
	if _, err := rtmclient.Validate(req); err != nil {
		return c.fail(err)
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	j, inserted, err := client.Enqueue(ctx, client.Pool(), req)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		return c.done(writeJSON(e.stdout, j))
	}
	if inserted {
		fmt.Fprintf(e.stdout, "enqueued job %d\n", j.ID)
	} else {
		fmt.Fprintf(e.stdout, "job %d already has idempotency key %q; nothing enqueued\n", j.ID, j.IdempotencyKey)
	}
	showJob(e.stdout, j)
	return ExitOK
}

// done turns an output error into an exit code.
func (c *opsCmd) done(err error) int {
	if err != nil {
		return c.fail(err)
	}
	return ExitOK
}

func jobsList(ctx context.Context, e *env, args []string) int {
	var f rtmclient.JobFilter
	var status string
	c, code, ok := parseOps(e, "jobs list", "[--game GAME] [--host HOST] [--status STATUS] [--limit N]", args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.GameID, "game", "", "only the jobs of this game")
		fs.StringVar(&f.HostID, "host", "", "only the jobs of this host")
		fs.StringVar(&status, "status", "", "only jobs in this status: queued, running, succeeded, failed or cancelled")
		fs.IntVar(&f.Limit, "limit", 50, "at most this many jobs, newest first")
		fs.Int64Var(&f.BeforeID, "before", 0, "only jobs with a smaller id (the next page)")
	})
	if !ok {
		return code
	}
	if code, ok := c.noArgs(); !ok {
		return code
	}
	switch s := rtmclient.JobStatus(status); s {
	case "", rtmclient.JobQueued, rtmclient.JobRunning, rtmclient.JobSucceeded, rtmclient.JobFailed, rtmclient.JobCancelled:
		f.Status = s
	default:
		return usageError(e, c.name, fmt.Errorf("--status must be queued, running, succeeded, failed or cancelled, got %q", status))
	}
	if f.Limit <= 0 {
		return usageError(e, c.name, fmt.Errorf("--limit must be positive, got %d", f.Limit))
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	js, err := client.ListJobs(ctx, f)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		if js == nil {
			js = []rtmclient.Job{}
		}
		return c.done(writeJSON(e.stdout, js))
	}
	t := newTable(e.stdout, "ID", "HOST", "GAME", "KIND", "STATUS", "ATTEMPT", "CREATED", "ERROR")
	for _, j := range js {
		attempt := strconv.Itoa(j.Attempt)
		if j.MaxAttempts > 0 {
			attempt += "/" + strconv.Itoa(j.MaxAttempts)
		}
		t.row(strconv.FormatInt(j.ID, 10), j.HostID, j.GameID, string(j.Kind), string(j.Status), attempt, stamp(j.CreatedAt), orDash(clip(j.LastError, 60)))
	}
	t.flush()
	return ExitOK
}

func jobsShow(ctx context.Context, e *env, args []string) int {
	c, code, ok := parseOps(e, "jobs show", "ID", args, nil)
	if !ok {
		return code
	}
	id, code, ok := c.jobID()
	if !ok {
		return code
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	j, err := client.GetJob(ctx, id)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		return c.done(writeJSON(e.stdout, j))
	}
	showJob(e.stdout, j)
	return ExitOK
}

func showJob(w io.Writer, j rtmclient.Job) {
	maxAttempts := "agent default"
	if j.MaxAttempts > 0 {
		maxAttempts = strconv.Itoa(j.MaxAttempts)
	}
	fields(w,
		"id", strconv.FormatInt(j.ID, 10),
		"host", j.HostID,
		"game", j.GameID,
		"kind", string(j.Kind),
		"status", string(j.Status),
		"attempt", strconv.Itoa(j.Attempt),
		"max attempts", maxAttempts,
		"payload", string(j.Payload),
		"idempotency key", j.IdempotencyKey,
		"traceparent", j.Traceparent,
		"run after", stamp(j.RunAfter),
		"lease owner", j.LeaseOwner,
		"lease expires", stampPtr(j.LeaseExpiresAt),
		"cancel requested", stampPtr(j.CancelRequestedAt),
		"last error", j.LastError,
		"created", stamp(j.CreatedAt),
		"started", stampPtr(j.StartedAt),
		"finished", stampPtr(j.FinishedAt),
	)
}

func jobsCancel(ctx context.Context, e *env, args []string) int {
	c, code, ok := parseOps(e, "jobs cancel", "ID", args, nil)
	if !ok {
		return code
	}
	id, code, ok := c.jobID()
	if !ok {
		return code
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	j, err := client.CancelJob(ctx, id)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		return c.done(writeJSON(e.stdout, j))
	}
	if j.Status == rtmclient.JobCancelled {
		fmt.Fprintf(e.stdout, "job %d cancelled\n", j.ID)
	} else {
		fmt.Fprintf(e.stdout, "job %d is %s on host %s: cancel requested; its agent stops it and records the outcome\n", j.ID, j.Status, j.HostID)
	}
	return ExitOK
}

// jobsRetry enqueues a copy of a failed or cancelled job.
func jobsRetry(ctx context.Context, e *env, args []string) int {
	c, code, ok := parseOps(e, "jobs retry", "ID", args, nil)
	if !ok {
		return code
	}
	id, code, ok := c.jobID()
	if !ok {
		return code
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	j, err := client.RetryJob(ctx, id)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		return c.done(writeJSON(e.stdout, j))
	}
	fmt.Fprintf(e.stdout, "job %d enqueued again as job %d\n", id, j.ID)
	return ExitOK
}
