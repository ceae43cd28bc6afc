package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// load binds the agent's settings to a fresh flag set, parses args and
// runs the checks.
func load(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	t.Setenv("RTM_HOST_ID", "host-a")
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := c.Set(fs, Agent)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return &c, check()
}

// TestReadyTimeout: RTM_READY_TIMEOUT (or --ready-timeout) is the
// default wait of a gated job: the contract's default unless set, whole
// seconds within the contract's 1s..1h.
func TestReadyTimeout(t *testing.T) {
	c, err := load(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.ReadyTimeout != job.DefaultReadyTimeoutSeconds*time.Second {
		t.Fatalf("default %s, want %ds", c.ReadyTimeout, job.DefaultReadyTimeoutSeconds)
	}

	t.Setenv("RTM_READY_TIMEOUT", "45s")
	if c, err = load(t); err != nil || c.ReadyTimeout != 45*time.Second {
		t.Fatalf("RTM_READY_TIMEOUT=45s: %v, %v", c, err)
	}
	if c, err = load(t, "--ready-timeout", "1h"); err != nil || c.ReadyTimeout != time.Hour {
		t.Fatalf("--ready-timeout 1h over the environment: %v, %v", c, err)
	}

	for _, bad := range []string{"0s", "500ms", "1500ms", "61m", "-5s"} {
		if _, err := load(t, "--ready-timeout", bad); err == nil || !strings.Contains(err.Error(), "RTM_READY_TIMEOUT") {
			t.Errorf("--ready-timeout %s: %v, want an error naming RTM_READY_TIMEOUT", bad, err)
		}
	}
	t.Setenv("RTM_READY_TIMEOUT", "soon")
	if _, err := load(t); err == nil || !strings.Contains(err.Error(), "RTM_READY_TIMEOUT") {
		t.Errorf("RTM_READY_TIMEOUT=soon: %v", err)
	}
}

func TestPrefetchIsBounded(t *testing.T) {
	if c, err := load(t); err != nil || c.Prefetch != 0 {
		t.Fatalf("default: %v, %v", c, err)
	}
	t.Setenv("RTM_PREFETCH", "64")
	if c, err := load(t); err != nil || c.Prefetch != 64 {
		t.Fatalf("RTM_PREFETCH=64: %v, %v", c, err)
	}
	for _, bad := range []string{"-1", "10001"} {
		if _, err := load(t, "--prefetch", bad); err == nil || !strings.Contains(err.Error(), "RTM_PREFETCH") {
			t.Errorf("--prefetch %s: %v, want an error naming RTM_PREFETCH", bad, err)
		}
	}
	t.Setenv("RTM_PREFETCH", "many")
	if _, err := load(t); err == nil || !strings.Contains(err.Error(), "RTM_PREFETCH") {
		t.Errorf("RTM_PREFETCH=many: %v, want an error naming it", err)
	}
}

func TestCrashRetentionDefaultAndOverride(t *testing.T) {
	if c, err := load(t); err != nil || c.CrashRetention != 30*24*time.Hour {
		t.Fatalf("default crash retention: %v, %v, want 720h", c, err)
	}
	t.Setenv("RTM_CRASH_RETENTION", "0")
	if c, err := load(t); err != nil || c.CrashRetention != 0 {
		t.Fatalf("RTM_CRASH_RETENTION=0: %v, %v", c, err)
	}
}
