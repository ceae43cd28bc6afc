package config_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/config"
)

// parse sets the agent's settings from args and the environment and
// returns the config and the error of its check ("" if none).
func parse(t *testing.T, args ...string) (config.Config, string) {
	t.Helper()
	var c config.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := c.Set(fs, config.Agent)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	if err := check(); err != nil {
		return c, err.Error()
	}
	return c, ""
}

func TestPrefetchIsBounded(t *testing.T) {
	if c, msg := parse(t); c.Prefetch != 0 || strings.Contains(msg, "RTM_PREFETCH") {
		t.Fatalf("default: prefetch %d, error %q", c.Prefetch, msg)
	}
	t.Setenv("RTM_PREFETCH", "64")
	if c, msg := parse(t); c.Prefetch != 64 || strings.Contains(msg, "RTM_PREFETCH") {
		t.Fatalf("RTM_PREFETCH=64: prefetch %d, error %q", c.Prefetch, msg)
	}
	for _, bad := range []string{"-1", "10001"} {
		if _, msg := parse(t, "--prefetch", bad); !strings.Contains(msg, "RTM_PREFETCH") {
			t.Errorf("--prefetch %s: error %q, want one naming RTM_PREFETCH", bad, msg)
		}
	}
	t.Setenv("RTM_PREFETCH", "many")
	if _, msg := parse(t); !strings.Contains(msg, "RTM_PREFETCH") {
		t.Errorf("RTM_PREFETCH=many: error %q, want one naming it", msg)
	}
}

func TestCrashRetentionDefaultAndOverride(t *testing.T) {
	if c, _ := parse(t); c.CrashRetention != 30*24*time.Hour {
		t.Fatalf("default crash retention %s, want 720h", c.CrashRetention)
	}
	t.Setenv("RTM_CRASH_RETENTION", "0")
	if c, _ := parse(t); c.CrashRetention != 0 {
		t.Fatalf("RTM_CRASH_RETENTION=0: %s", c.CrashRetention)
	}
}
