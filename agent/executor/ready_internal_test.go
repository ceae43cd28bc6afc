package executor

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// TestNotReadyQuotesTheProbeSafely: the probe's output is the engine's
// own text: in the job's error it is escaped, trimmed and bounded, and
// the error is permanent and wraps job.ErrNotReady.
func TestNotReadyQuotesTheProbeSafely(t *testing.T) {
	hostile := "\x1b[31mred\x1b[0m \xff\u202e\n" + strings.Repeat("é", 4*MaxProbeOutputBytes) + "\n"
	err := notReady(engine.Container{ID: strings.Repeat("a", 64), HealthOutput: hostile}, "is unhealthy")
	if !errors.Is(err, job.ErrNotReady) || !job.IsPermanent(err) {
		t.Fatalf("error %v: want a permanent ErrNotReady", err)
	}
	msg := err.Error()
	_, quoted, ok := strings.Cut(msg, "last health check output: ")
	if !ok || !strings.HasPrefix(msg, "engine not ready: container aaaaaaaaaaaa is unhealthy;") {
		t.Fatalf("message %q", msg)
	}
	if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x1b\n\u202e") || !strings.HasPrefix(quoted, `\x1b[31mred\x1b[0m \xff\u202e\x0a`) {
		t.Fatalf("the output is not escaped: %q", quoted)
	}
	if len(quoted) > MaxProbeOutputBytes+len("…") || !strings.HasSuffix(quoted, "…") {
		t.Fatalf("the output is %d bytes, not cut at %d: …%q", len(quoted), MaxProbeOutputBytes, quoted[len(quoted)-8:])
	}
	if plain := notReady(engine.Container{ID: "c1"}, "exited").Error(); strings.Contains(plain, "output") {
		t.Fatalf("an empty output is quoted: %q", plain)
	}
}
