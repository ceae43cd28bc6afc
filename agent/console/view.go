package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/crash"
)

// printable makes untrusted text safe to look at as well as to render:
// html/template escapes markup, and this turns what a terminal or a
// browser would act on or hide (escape sequences, other control
// characters, bidirectional overrides, invalid UTF-8) into visible
// escapes such as \x1b. Newlines and tabs stay.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsGraphic(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// clip shortens s to n characters on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// prettyJSON indents a JSON document for display; other bytes are shown
// as they are (printable takes care of the rest).
func prettyJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}

var traceparentRE = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$`)

// traceID returns the trace id of a W3C traceparent, "" when it is not one
// (the column is written by the Game Master: anything may be there).
func traceID(tp string) string {
	m := traceparentRE.FindStringSubmatch(tp)
	if m == nil || m[1] == "ff" || m[2] == strings.Repeat("0", 32) || m[3] == strings.Repeat("0", 16) {
		return ""
	}
	return m[2]
}

// ago formats a duration for people: 3s, 4m 10s, 2h 5m, 3d 4h.
func ago(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// stamp formats a time in UTC to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func stampPtr(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return stamp(*t)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func shortID(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// eventView is an outbox event as the pages show it. The payload's known
// fields are read leniently: a value of the wrong type is left out, and
// the whole payload is still shown.
type eventView struct {
	ID      int64
	Type    string
	HostID  string
	GameID  string
	JobID   int64
	At      time.Time
	Payload string

	Reason, FromStatus, ToStatus string
	ContainerID, ImageRef        string
	ExitCode                     *int64
	OOM                          bool
	RequestedByJob               bool
	JobKind, JobStatus, Error    string
	Attempt                      int64
}

func eventViewOf(e dbsqlc.Outbox) eventView {
	v := eventView{ID: e.ID, Type: e.Type, HostID: e.HostID, GameID: e.GameID, At: e.CreatedAt, Payload: prettyJSON(e.Payload)}
	if e.JobID != nil {
		v.JobID = *e.JobID
	}
	var m map[string]any
	if json.Unmarshal(e.Payload, &m) != nil {
		return v
	}
	s := func(k string) string {
		x, _ := m[k].(string)
		return x
	}
	v.Reason, v.FromStatus, v.ToStatus = s("reason"), s("from_status"), s("to_status")
	v.ContainerID, v.ImageRef, v.Error = s("container_id"), s("image_ref"), s("error")
	v.JobKind, v.JobStatus = s("kind"), s("status")
	if n, ok := m["exit_code"].(float64); ok {
		c := int64(n)
		v.ExitCode = &c
	}
	if n, ok := m["attempt"].(float64); ok {
		v.Attempt = int64(n)
	}
	v.OOM, _ = m["oom"].(bool)
	v.RequestedByJob, _ = m["requested_by_job"].(bool)
	return v
}

// Summary is the event in one line (plain text; the caller escapes it).
func (v eventView) Summary() string {
	var parts []string
	switch {
	case strings.HasPrefix(v.Type, "runtime."):
		from := v.FromStatus
		if from == "" {
			from = "new"
		}
		parts = append(parts, from+" → "+v.ToStatus)
		if v.Reason != "" {
			parts = append(parts, v.Reason)
		}
		if v.ExitCode != nil {
			parts = append(parts, "exit "+strconv.FormatInt(*v.ExitCode, 10))
		}
		if v.OOM {
			parts = append(parts, "OOM")
		}
	case strings.HasPrefix(v.Type, "job."):
		parts = append(parts, fmt.Sprintf("job %d %s %s", v.JobID, v.JobKind, v.JobStatus))
		if v.Attempt > 0 {
			parts = append(parts, "attempt "+strconv.FormatInt(v.Attempt, 10))
		}
		if v.Error != "" {
			parts = append(parts, clip(v.Error, 120))
		}
	case v.Type == "container.orphaned":
		parts = append(parts, "container "+shortID(v.ContainerID))
	}
	return printable(strings.Join(parts, " · "))
}

// Tone is the CSS class of the event's badge.
func (v eventView) Tone() string {
	switch v.Type {
	case "runtime.running", "job.succeeded":
		return "ok"
	case "runtime.stopped":
		if v.RequestedByJob {
			return "muted"
		}
		return "warn"
	case "job.failed", "container.orphaned":
		return "bad"
	default:
		return "muted"
	}
}

// jobView is a job as the pages show it.
type jobView struct {
	dbsqlc.Job
	TraceID  string
	TraceURL string
	// Waited is how long a queued job has waited, by the database's clock.
	Waited             string
	CanCancel          bool
	CanRetry           bool
	CancelRequested    bool
	PayloadText, Error string
}

func (s *Server) jobViewOf(j dbsqlc.Job, now time.Time) jobView {
	v := jobView{Job: j, TraceID: traceID(str(j.Traceparent)), PayloadText: prettyJSON(j.Payload), Error: str(j.LastError)}
	if v.TraceID != "" && s.opts.TraceURL != "" {
		v.TraceURL = strings.ReplaceAll(s.opts.TraceURL, "{trace_id}", v.TraceID)
	}
	if j.Status == "queued" {
		v.Waited = ago(now.Sub(j.CreatedAt))
	}
	v.CanCancel = j.Status == "queued" || j.Status == "running"
	v.CanRetry = j.Status == "failed" || j.Status == "cancelled"
	v.CancelRequested = j.CancelRequestedAt != nil && v.CanCancel
	return v
}

// Attempts is "2/5", or "2" with the agent's default maximum.
func (v jobView) Attempts() string {
	if v.MaxAttempts > 0 {
		return fmt.Sprintf("%d/%d", v.Attempt, v.MaxAttempts)
	}
	return strconv.Itoa(int(v.Attempt))
}

// Took is how long a finished job ran, from its last start.
func (v jobView) Took() string {
	if v.StartedAt == nil || v.FinishedAt == nil {
		return ""
	}
	d := v.FinishedAt.Sub(*v.StartedAt)
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return ago(d)
}

func statusTone(status string) string {
	switch status {
	case "running", "succeeded", "up", "healthy":
		return "ok"
	case "queued", "stopped", "starting":
		return "warn"
	case "failed", "down", "unhealthy":
		return "bad"
	default:
		return "muted"
	}
}

// crashView is a game's last crash report. Its lines are the engine's
// output: sanitised by the agent, but still untrusted, so the template
// escapes them and printable runs over them again.
type crashView struct {
	At           time.Time
	ContainerID  string
	ExitCode     string
	OOM          bool
	Truncated    bool
	CaptureError string
	Lines        []crash.Line
	// LinesError says why the stored lines could not be read; the rest of
	// the report still shows.
	LinesError string
}

func crashViewOf(r dbsqlc.CrashReport) crashView {
	v := crashView{At: r.ExitedAt, ContainerID: r.ContainerID, ExitCode: "unknown", OOM: r.Oom, Truncated: r.Truncated}
	if r.ExitCode != nil {
		v.ExitCode = strconv.Itoa(int(*r.ExitCode))
	}
	if r.CaptureError != nil {
		v.CaptureError = *r.CaptureError
	}
	if err := json.Unmarshal(r.Lines, &v.Lines); err != nil {
		v.LinesError = "decode the lines of crash report " + strconv.FormatInt(r.ID, 10) + ": " + err.Error()
		v.Lines = nil
	}
	return v
}
