package app_test

import (
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/app"
	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// TestPolicyTakesTheReadyTimeout: RTM_READY_TIMEOUT becomes the policy's
// default wait of a gated job; unset, the contract's default stays.
func TestPolicyTakesTheReadyTimeout(t *testing.T) {
	cfg := &config.Config{StateRoot: "/srv/state", ReadyTimeout: 45 * time.Second}
	p := app.Policy(cfg)
	if p.DefaultReadyTimeout != 45*time.Second || p.MaxReadyTimeout != job.MaxReadyTimeoutSeconds*time.Second {
		t.Fatalf("ready timeouts %s, max %s", p.DefaultReadyTimeout, p.MaxReadyTimeout)
	}
	spec, err := job.Decode("restart", "g1", nil, p)
	if err != nil || spec.ReadyTimeout != 45*time.Second {
		t.Fatalf("a restart without ready_timeout_seconds waits %s (%v), want 45s", spec.ReadyTimeout, err)
	}
	if p := app.Policy(&config.Config{StateRoot: "/srv/state"}); p.DefaultReadyTimeout != job.DefaultReadyTimeoutSeconds*time.Second {
		t.Fatalf("default ready timeout %s", p.DefaultReadyTimeout)
	}
}
