package cli

import (
	"context"
	"testing"
)

// TestConsoleRefusesUnusableSettings: actions nobody could take, a short
// token and a malformed trace link are usage errors that say what to fix.
func TestConsoleRefusesUnusableSettings(t *testing.T) {
	t.Setenv("RTM_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	for _, tc := range []struct {
		env, val, want string
		args           []string
	}{
		{"RTM_CONSOLE_ACTIONS", "true", "needs RTM_CONSOLE_TOKEN", nil},
		{"RTM_CONSOLE_TOKEN", "short", "at least 16 characters", nil},
		{"RTM_CONSOLE_TRACE_URL", "javascript:alert(1)/{trace_id}", "http(s) URL containing {trace_id}", nil},
		{"RTM_CONSOLE_TRUSTED_HEADER", "X-User: evil", "header name", nil},
		{"RTM_CONSOLE_DOWN_AFTER", "0s", "must be positive", nil},
		{"", "", "must be positive", []string{"--console-poll-interval", "-1s"}},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(tc.env, tc.val)
			}
			r := runCLI(context.Background(), append([]string{"console"}, tc.args...)...)
			if r.code != ExitUsage {
				t.Fatalf("exit %d, want %d: %s", r.code, ExitUsage, r.stderr)
			}
			oneLine(t, r, tc.want)
		})
	}
}
