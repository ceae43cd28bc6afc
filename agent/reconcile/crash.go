package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// CaptureTimeout bounds one capture of a crashed engine's output: it runs
// under the game's lock, before the exit commits.
const CaptureTimeout = 10 * time.Second

// IsCrash reports whether a transition to next with details d is an exit
// no job asked for, which gets a crash report: an observed die or a
// reconciled exit (an OOM kill is one of them).
func IsCrash(next runtime.RuntimeRecord, d outbox.TransitionDetails) bool {
	return next.Status == runtime.StatusStopped &&
		(d.Reason == outbox.ReasonObservedDie || d.Reason == outbox.ReasonReconcileExit)
}

// CaptureCrash reads the last lines of the exited container of next and
// returns the crash report that goes with the transition. It is called
// before the transition commits, so the sweeper (which removes only
// containers of stopped records) cannot have removed the container yet.
// A failed read still gives a report, with the error in CaptureError.
func CaptureCrash(ctx context.Context, eng engine.Engine, lim crash.Limits, next runtime.RuntimeRecord, d outbox.TransitionDetails, log *slog.Logger) *crash.Report {
	r := &crash.Report{
		HostID: next.HostID, GameID: next.GameID, ContainerID: next.CurrentContainerID,
		ExitCode: d.ExitCode, OOM: d.OOM, ExitedAt: next.LastOpAt,
	}
	if next.StoppedAt != nil {
		r.ExitedAt = *next.StoppedAt
	}
	ctx, cancel := context.WithTimeout(ctx, CaptureTimeout)
	defer cancel()
	out, err := eng.TailLogs(ctx, next.CurrentContainerID, lim)
	r.Output = out
	if err != nil {
		r.CaptureError = crash.Sanitize(err.Error())
		if log != nil {
			log.Warn("crash report without its output", "game_id", next.GameID, "container_id", next.CurrentContainerID, "err", err)
		}
	}
	return r
}

// health records the health Docker reports for the running container of
// a running record when it differs from the record's (a health_status
// event the watcher missed): one runtime.health event, reason
// reconcile_health.
func (r *Reconciler) health(ctx context.Context, rec runtime.RuntimeRecord, c engine.Container, found bool, have runtime.Health, rep *Report) error {
	if !found || !c.Running || rec.Status != runtime.StatusRunning {
		return nil
	}
	want := runtime.HealthFromDocker(c.Health)
	if want == have {
		return nil
	}
	ch, err := r.store.ObserveHealth(ctx, r.cfg.HostID, rec.GameID, c.ID, want, outbox.HealthReconciled, r.now())
	if err != nil {
		return fmt.Errorf("reconcile health of game %s: %w", rec.GameID, err)
	}
	if ch.Changed {
		rep.Health++
		r.log.Info("health repaired", "game_id", rec.GameID, "container_id", c.ID, "from", ch.From, "to", ch.To)
	}
	return nil
}
