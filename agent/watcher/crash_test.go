package watcher_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

func (e *env) crashReports(gameID string) []db.StoredCrash {
	e.t.Helper()
	rs, err := e.store.CrashReports(e.ctx, gameID, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// TestCrashReportOfHostileEngine: an engine that exits by itself after
// printing 10 MB, a 1 MiB line, escape sequences, control characters and
// invalid UTF-8 gets one crash report, written with its observed_die: the
// last lines of both streams, bounded, valid UTF-8 with every control
// character escaped.
func TestCrashReportOfHostileEngine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lim := crash.Limits{Lines: 50, Bytes: 4 << 10}
	e.startWatcher(watcher.Config{Crash: lim})

	g := e.create("hostile", "ENGINE_EXIT_AFTER=300ms", "ENGINE_EXIT_CODE=3", "ENGINE_HOSTILE_OUTPUT=1")
	e.record(g)
	e.startReady(g)
	r := e.waitStatus("hostile", runtime.StatusStopped)

	rs := e.crashReports("hostile")
	if len(rs) != 1 {
		t.Fatalf("%d crash reports, want 1", len(rs))
	}
	c := rs[0]
	if c.ContainerID != g.c.ID || c.HostID != e.hostID || c.ExitCode == nil || *c.ExitCode != 3 || c.OOM || c.CaptureError != "" {
		t.Fatalf("crash report %+v", c.Report)
	}
	if r.StoppedAt == nil || !c.ExitedAt.Equal(*r.StoppedAt) {
		t.Errorf("crash exited at %v, record stopped at %v", c.ExitedAt, r.StoppedAt)
	}
	byGame, _ := e.events(2)
	if got := reasons(byGame["hostile"]); len(got) != 1 || got[0] != "observed_die" {
		t.Fatalf("transitions %v, want [observed_die]", got)
	}
	if c.EventID == 0 {
		t.Error("crash report names no event")
	}
	if !c.Output.Truncated {
		t.Error("10 MB of output kept whole?")
	}
	size := 0
	var text strings.Builder
	for _, l := range c.Output.Lines {
		size += len(l.Text)
		if !utf8.ValidString(l.Text) {
			t.Errorf("invalid UTF-8 kept: %q", l.Text)
		}
		for _, ch := range l.Text {
			if (ch < 0x20 && ch != '\t') || ch == 0x7f || (ch >= 0x80 && ch <= 0x9f) || ch == 0x202e {
				t.Errorf("control character %U kept in %q", ch, l.Text)
			}
		}
		text.WriteString(string(l.Stream) + ": " + l.Text + "\n")
	}
	if size > lim.Bytes || len(c.Output.Lines) > lim.Lines {
		t.Errorf("%d lines, %d bytes kept, limits %+v", len(c.Output.Lines), size, lim)
	}
	// Docker's json-file driver already turns invalid UTF-8 into U+FFFD;
	// a driver that keeps bytes gets them escaped.
	got := strings.ReplaceAll(text.String(), "\uFFFD\uFFFD", `\xff\xfe`)
	for _, want := range []string{
		`stdout: stdout last \x1b[2J\x1b]0;pwned\x07 words`,
		`stderr: \x1b[31mred\x1b[0m \xff\xfe invalid \u202e rtl \x00 nul \\ backslash`,
		"stderr: engine: ENGINE_EXIT_AFTER elapsed, exiting with 3",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("crash lines lack %q:\n%s", want, got)
		}
	}
}

// TestNoCrashReportForARequestedStop: a die the game's job in progress
// asked for is no crash.
func TestNoCrashReportForARequestedStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWatcher(watcher.Config{})
	g := e.runningGame("asked")
	e.claimedJob("asked", "stop")
	if err := e.eng.StopContainer(e.ctx, g.c.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The die is the job's: recorded with its reason, no crash report.
	e.waitStatus("asked", runtime.StatusStopped)
	byGame, _ := e.events(2)
	if got := reasons(byGame["asked"]); len(got) != 1 || got[0] != "job_stop" {
		t.Fatalf("transitions %v, want [job_stop]", got)
	}
	if rs := e.crashReports("asked"); len(rs) != 0 {
		t.Fatalf("crash reports %+v for a requested stop", rs)
	}
}
