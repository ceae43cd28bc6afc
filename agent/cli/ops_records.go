package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/galaxy/rtmanager/rtmclient"
)

func cmdRecords(ctx context.Context, e *env, args []string) int {
	const actions = "list or show GAME"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintf(e.stdout, "Usage: rtmanager records %s [flags]\n", actions)
		return ExitOK
	}
	if len(args) == 0 {
		return unknownAction(e, "records", args, actions)
	}
	switch args[0] {
	case "list":
		return recordsList(ctx, e, args[1:])
	case "show":
		return recordsShow(ctx, e, args[1:])
	default:
		return unknownAction(e, "records", args, actions)
	}
}

func recordsList(ctx context.Context, e *env, args []string) int {
	var f rtmclient.RecordFilter
	var status string
	c, code, ok := parseOps(e, "records list", "[--host HOST] [--status STATUS]", args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.HostID, "host", "", "only the records of this host")
		fs.StringVar(&status, "status", "", "only records in this status: running, stopped or removed")
		fs.IntVar(&f.Limit, "limit", 1000, "at most this many records, by game id")
		fs.StringVar(&f.AfterGameID, "after", "", "only games after this id (the next page)")
	})
	if !ok {
		return code
	}
	if code, ok := c.noArgs(); !ok {
		return code
	}
	switch s := rtmclient.RecordStatus(status); s {
	case "", rtmclient.RecordRunning, rtmclient.RecordStopped, rtmclient.RecordRemoved:
		f.Status = s
	default:
		return usageError(e, c.name, fmt.Errorf("--status must be running, stopped or removed, got %q", status))
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	rs, err := client.ListRecords(ctx, f)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		if rs == nil {
			rs = []rtmclient.Record{}
		}
		return c.done(writeJSON(e.stdout, rs))
	}
	t := newTable(e.stdout, "GAME", "HOST", "STATUS", "IMAGE", "CONTAINER", "LAST OP")
	for _, r := range rs {
		t.row(r.GameID, r.HostID, string(r.Status), orDash(r.CurrentImageRef), orDash(clip(r.CurrentContainerID, 12)), stamp(r.LastOpAt))
	}
	t.flush()
	return ExitOK
}

func recordsShow(ctx context.Context, e *env, args []string) int {
	c, code, ok := parseOps(e, "records show", "GAME", args, nil)
	if !ok {
		return code
	}
	game, code, ok := c.oneArg("game id")
	if !ok {
		return code
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	r, err := client.GetRecord(ctx, game)
	if err != nil {
		return c.fail(err)
	}
	crashes, err := client.CrashReports(ctx, game, 1)
	if err != nil {
		return c.fail(err)
	}
	var last *rtmclient.CrashReport
	if len(crashes) > 0 {
		last = &crashes[0]
	}
	if c.json() {
		return c.done(writeJSON(e.stdout, struct {
			rtmclient.Record
			LastCrash *rtmclient.CrashReport `json:"last_crash,omitempty"`
		}{r, last}))
	}
	fields(e.stdout,
		"game", r.GameID,
		"host", r.HostID,
		"status", string(r.Status),
		"health", r.Health,
		"container", r.CurrentContainerID,
		"image", r.CurrentImageRef,
		"endpoint", r.EngineEndpoint,
		"state path", r.StatePath,
		"network", r.DockerNetwork,
		"started", stampPtr(r.StartedAt),
		"stopped", stampPtr(r.StoppedAt),
		"removed", stampPtr(r.RemovedAt),
		"last op", stamp(r.LastOpAt),
		"created", stamp(r.CreatedAt),
	)
	if last != nil {
		writeCrash(e.stdout, *last)
	}
	return ExitOK
}

// writeCrash prints a crash report. Its lines are stored sanitised (no
// control character left), so they are printed as they are, each after
// its stream's name.
func writeCrash(w io.Writer, cr rtmclient.CrashReport) {
	code := "unknown"
	if cr.ExitCode != nil {
		code = strconv.Itoa(*cr.ExitCode)
	}
	fmt.Fprintf(w, "\nlast crash: exit code %s, oom %t, at %s, container %s\n", code, cr.OOM, stamp(cr.ExitedAt), clip(cr.ContainerID, 12))
	if cr.CaptureError != "" {
		fmt.Fprintf(w, "  (output not captured: %s)\n", cr.CaptureError)
	}
	if cr.Truncated {
		fmt.Fprintln(w, "  … (earlier output left out)")
	}
	for _, l := range cr.Lines {
		fmt.Fprintf(w, "  %s | %s\n", l.Stream, l.Text)
	}
}

func cmdHosts(ctx context.Context, e *env, args []string) int {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(e.stdout, "Usage: rtmanager hosts list [--down-after DURATION] [flags]")
		return ExitOK
	}
	if len(args) == 0 || args[0] != "list" {
		return unknownAction(e, "hosts", args, "list")
	}
	var downAfter time.Duration
	c, code, ok := parseOps(e, "hosts list", "[--down-after DURATION]", args[1:], func(fs *flag.FlagSet) {
		fs.DurationVar(&downAfter, "down-after", 3*20*time.Second, "a host whose heartbeat is older than this is down (three heartbeat intervals, RTM_HEARTBEAT_INTERVAL, is a good value)")
	})
	if !ok {
		return code
	}
	if code, ok := c.noArgs(); !ok {
		return code
	}
	if downAfter <= 0 {
		return usageError(e, c.name, fmt.Errorf("--down-after must be positive, got %s", downAfter))
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	hs, err := client.ListHosts(ctx, downAfter)
	if err != nil {
		return c.fail(err)
	}
	if c.json() {
		if hs == nil {
			hs = []rtmclient.Host{}
		}
		return c.done(writeJSON(e.stdout, hs))
	}
	t := newTable(e.stdout, "HOST", "STATE", "AGENT", "VERSION", "QUEUED", "HEARTBEAT", "AGE")
	for _, h := range hs {
		state := "up"
		if h.Down {
			state = "down"
		}
		t.row(h.HostID, state, h.AgentID, orDash(h.AgentVersion), strconv.FormatInt(h.QueuedJobs, 10), stamp(h.HeartbeatAt), h.HeartbeatAge().Round(time.Second).String())
	}
	t.flush()
	return ExitOK
}
