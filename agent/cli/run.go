package cli

import (
	"context"

	"github.com/galaxy/rtmanager/agent/app"
	"github.com/galaxy/rtmanager/agent/config"
	"github.com/galaxy/rtmanager/agent/sweeper"
)

func cmdRun(ctx context.Context, e *env, args []string) int {
	var cfg config.Config
	if _, code, ok := parse(e, "run", "[flags]", args, &cfg, config.Database, config.Agent, config.Logging); !ok {
		return code
	}
	if code, ok := checkAgentConfig(e, "run", &cfg); !ok {
		return code
	}
	if err := app.Run(ctx, &cfg, newLogger(e.stderr, &cfg), Version); err != nil {
		return fail(e, "run", err)
	}
	return ExitOK
}

// checkAgentConfig refuses, as a usage error, settings that only the
// agent's parts can judge.
func checkAgentConfig(e *env, cmd string, cfg *config.Config) (int, bool) {
	if _, err := sweeper.ParseSchedule(cfg.SweepSchedule); err != nil {
		return usageError(e, cmd, err), false
	}
	if err := app.Policy(cfg).Validate(); err != nil {
		return usageError(e, cmd, err), false
	}
	return 0, true
}
