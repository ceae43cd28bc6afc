package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/retry"
)

// HealthRecorder records the health of a game's running container;
// *db.Store implements it. A job that waited for its engine to be
// healthy uses it once its outcome has committed: Docker reports a health
// change once, and a gated job's change came before the record named the
// container, so no later event would tell.
type HealthRecorder interface {
	ObserveHealth(ctx context.Context, hostID, gameID, containerID string, h runtime.Health, reason outbox.HealthReason, at time.Time) (db.HealthChange, error)
}

// MaxProbeOutputBytes bounds the health check output quoted in a job's
// error (after sanitising); Docker keeps up to 4 KiB of each probe.
const MaxProbeOutputBytes = 1024

// The inspect polling of a readiness wait: from readyPollMin, doubling up
// to readyPollMax, so a fast engine is seen soon and a slow one costs a
// few inspects a second at most.
const (
	readyPollMin = 50 * time.Millisecond
	readyPollMax = time.Second
)

// awaitReady waits until container id, when it has a health check (the
// image's or the payload's), is healthy: it returns nil at once for a
// container without one, running or not. It fails with job.ErrNotReady
// (permanent) when the engine turns unhealthy, exits, or is still starting
// after t.Spec.ReadyTimeout, quoting the last probe's output; it returns
// the context's error, not permanent, when the job is interrupted. seen,
// when not nil, is a look at the container taken since it started: it
// stands for the first inspect (a warm start without a health check then
// costs no Docker call here).
func (e *Executor) awaitReady(ctx context.Context, t worker.Task, id string, seen *engine.Container) error {
	timeout := t.Spec.ReadyTimeout
	if timeout <= 0 {
		timeout = job.DefaultReadyTimeoutSeconds * time.Second
	}
	began := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	b := retry.Backoff(readyPollMin, readyPollMax)
	for {
		var c engine.Container
		var err error
		if seen != nil {
			c, seen = *seen, nil
		} else {
			c, err = e.eng.InspectContainer(ctx, id)
		}
		if err != nil {
			if errors.Is(err, engine.ErrNotFound) {
				return job.Permanent(fmt.Errorf("%w: container %s is gone before it was healthy", job.ErrNotReady, shortID(id)))
			}
			return fmt.Errorf("wait for container %s to be healthy: %w", shortID(id), engineErr(err))
		}
		switch {
		case !c.HasHealthcheck:
			// Nothing to wait for: an engine that exits at once is
			// recorded as the die it was (the job's Check).
			return nil
		case !c.Running:
			return notReady(c, fmt.Sprintf("exited with code %d before it was healthy", c.ExitCode))
		case c.Health == string(runtime.HealthHealthy):
			return nil
		case c.Health == string(runtime.HealthUnhealthy):
			return notReady(c, fmt.Sprintf("is unhealthy after %s (ready timeout %s)", time.Since(began).Round(time.Millisecond), timeout))
		}
		wait := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			wait.Stop()
			return fmt.Errorf("wait for container %s to be healthy: %w", shortID(id), context.Cause(ctx))
		case <-deadline.C:
			wait.Stop()
			// One last look: the engine may have passed just now.
			if last, err := e.eng.InspectContainer(ctx, id); err == nil {
				if last.Running && last.Health == string(runtime.HealthHealthy) {
					return nil
				}
				c = last
			}
			return notReady(c, fmt.Sprintf("is still %s after the ready timeout of %s", healthWord(c), timeout))
		case <-wait.C:
		}
	}
}

// notReady is the permanent error of an engine that is not ready, with
// the last probe's output, sanitised and bounded: it is the engine's own
// text.
func notReady(c engine.Container, what string) error {
	msg := fmt.Sprintf("%s: container %s %s", job.ErrNotReady, shortID(c.ID), what)
	if out := probeOutput(c.HealthOutput); out != "" {
		msg += "; last health check output: " + out
	}
	return job.Permanent(&notReadyError{msg: msg})
}

// notReadyError carries the message and wraps job.ErrNotReady.
type notReadyError struct{ msg string }

func (e *notReadyError) Error() string { return e.msg }
func (e *notReadyError) Unwrap() error { return job.ErrNotReady }

func healthWord(c engine.Container) string {
	if !c.Running {
		return "not running"
	}
	if c.Health == "" {
		return "without a health status"
	}
	return c.Health
}

// probeOutput quotes a probe's output: control characters escaped (see
// crash.Sanitize), trimmed, cut at MaxProbeOutputBytes on a character
// boundary and marked with "…" when cut.
func probeOutput(s string) string {
	s = crash.Sanitize(strings.TrimSpace(s))
	if len(s) <= MaxProbeOutputBytes {
		return s
	}
	cut := MaxProbeOutputBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// recordHealth is the AfterCommit of a gated job: it writes the health
// Docker reports now for container id, which the job's commit named and
// set to none. Inspecting at this moment keeps the window small in which
// a health_status event applied after the commit could be overwritten by
// an older look; the relist repairs what slips through.
func (e *Executor) recordHealth(t worker.Task, id string, seen *engine.Container) func(context.Context) error {
	if e.cfg.Health == nil || (seen != nil && !seen.HasHealthcheck) {
		return nil // no health to tell: a container's health check is fixed at its creation
	}
	return func(ctx context.Context) error {
		c, err := e.eng.InspectContainer(ctx, id)
		if err != nil || !c.Running || c.Health == "" {
			return nil // nothing to tell: the watcher and the relist follow the rest
		}
		_, err = e.cfg.Health.ObserveHealth(ctx, t.HostID, t.Spec.GameID, id, runtime.HealthFromDocker(c.Health), outbox.HealthReconciled, time.Now())
		if err != nil {
			return fmt.Errorf("record the health of game %s: %w", t.Spec.GameID, err)
		}
		return nil
	}
}

// healthcheck is the engine's form of a payload's health check.
func healthcheck(h *job.HealthSpec) *engine.Healthcheck {
	if h == nil {
		return nil
	}
	return &engine.Healthcheck{
		Command: h.Command, Interval: h.Interval, Timeout: h.Timeout,
		StartPeriod: h.StartPeriod, Retries: h.Retries,
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// chain runs the non-nil functions in order and returns the first error.
func chain(fs ...func(context.Context) error) func(context.Context) error {
	var live []func(context.Context) error
	for _, f := range fs {
		if f != nil {
			live = append(live, f)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		var first error
		for _, f := range live {
			if err := f(ctx); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}
