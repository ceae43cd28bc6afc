package executor_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// The readiness tests run the engine's own health check (`/engine
// healthcheck`, which asks its /healthz, see ENGINE_HEALTH) every 200 ms:
// from the image (dockertest.EngineImageHealthy) or from the payload.

// healthyImage returns a variant of the test engine whose image declares
// a HEALTHCHECK (200 ms interval, 2 retries).
func (e *env) healthyImage() string {
	e.t.Helper()
	return dockertest.EngineImageHealthy(e.t, dockertest.ImageRepo+":hc-"+e.hostID)
}

// runWatcher runs the events watcher beside the worker, as the agent
// does, until the test ends, and waits until it is connected.
func (e *env) runWatcher() {
	e.t.Helper()
	if _, err := e.store.RegisterHost(context.Background(), e.hostID, "agent-"+e.hostID, "test"); err != nil {
		e.t.Fatal(err)
	}
	rec := reconcile.New(e.store, e.eng, reconcile.Config{HostID: e.hostID, OrphanGrace: time.Hour})
	w := watcher.New(e.store, e.eng, rec, e.intents, watcher.Config{HostID: e.hostID})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("watcher Run: %v", err)
		}
	})
	wait.For(e.t, time.Minute, "watcher connected", w.Connected)
}

// failedFor waits for the job to end and requires a permanent failure at
// its first attempt whose error holds every one of says.
func (e *env) failedFor(id int64, says ...string) db.Job {
	e.t.Helper()
	j := e.finished(id)
	if j.Status != job.StatusFailed || j.Attempt != 1 {
		e.t.Fatalf("job %d (%s) ended %s after %d attempts: %q; want failed at once", id, j.Kind, j.Status, j.Attempt, j.LastError)
	}
	for _, s := range says {
		if !strings.Contains(j.LastError, s) {
			e.t.Fatalf("job %d's error %q does not say %q", id, j.LastError, s)
		}
	}
	return j
}

func (e *env) health(gameID string) runtime.Health {
	e.t.Helper()
	h, err := e.store.Health(context.Background(), gameID)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) waitHealth(gameID string, want runtime.Health) {
	e.t.Helper()
	wait.For(e.t, time.Minute, fmt.Sprintf("game %s's record to say %s", gameID, want), func() bool { return e.health(gameID) == want })
}

// dockerHealth is the container's health as Docker reports it now.
func (e *env) dockerHealth(id string) string {
	e.t.Helper()
	c, err := e.eng.InspectContainer(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Health
}

func payload(image string, members ...string) string {
	return fmt.Sprintf(`{"image_ref": %q, "limits": {"pids_limit": 64}%s}`, image, strings.Join(append([]string{""}, members...), ", "))
}

// TestStartWaitsUntilHealthy: a start of an image with a HEALTHCHECK
// succeeds only once Docker says healthy, and the record says healthy too.
func TestStartWaitsUntilHealthy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "ready"
	e.succeeded(e.insert(g, "start", payload(img, `"ready_timeout_seconds": 60`)))
	rec := e.record(g)
	// The engine is healthy for good once it is. A job that did not wait
	// would have ended before the first probe (200 ms after the start),
	// while Docker still said starting.
	if h := e.dockerHealth(rec.CurrentContainerID); h != "healthy" {
		t.Fatalf("Docker says %q when the start job has succeeded", h)
	}
	if rec.Status != runtime.StatusRunning || rec.CurrentImageRef != img {
		t.Fatalf("record: %+v", rec)
	}
	if c, err := e.eng.InspectContainer(context.Background(), rec.CurrentContainerID); err != nil || !c.HasHealthcheck {
		t.Fatalf("the image's HEALTHCHECK is not seen on its container: %+v, %v", c, err)
	}
	e.waitHealth(g, runtime.HealthHealthy)
	e.wantEvents(g, "runtime.running:job_start", "job.succeeded", "runtime.health:reconcile_health")
}

// TestStartNeverHealthyFails: an engine whose health check fails turns
// unhealthy; the start fails for good (one attempt) with the probe's
// output in its error, and the record says what is true: running,
// unhealthy.
func TestStartNeverHealthyFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "sick"
	j := e.failedFor(e.insert(g, "start", payload(img, `"env": {"ENGINE_HEALTH": "never"}`, `"ready_timeout_seconds": 30`)),
		job.ErrNotReady.Error(), "is unhealthy", "last health check output: 503 not ready: never healthy (ENGINE_HEALTH=never)")
	rec := e.record(g)
	cs := e.containers(g)
	if rec.Status != runtime.StatusRunning || len(cs) != 1 || cs[0].ID != rec.CurrentContainerID || !cs[0].Running || cs[0].Health != "unhealthy" {
		t.Fatalf("after the failed start: record %+v, containers %+v", rec, cs)
	}
	e.waitHealth(g, runtime.HealthUnhealthy)
	e.wantEvents(g, "runtime.running:job_start", "job.failed", "runtime.health:reconcile_health")
	if id := e.eventField(g, "runtime.running", "job_id"); id != fmt.Sprint(j.ID) {
		t.Fatalf("the start's transition names job %q, want %d", id, j.ID)
	}
}

// TestStartCrashBeforeHealthy: an engine with a health check that exits
// before it is healthy fails its start at once; the record says what
// happened: the job's start, then the exit as the die it was, with its
// crash report.
func TestStartCrashBeforeHealthy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "brittle"
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	e.failedFor(e.insert(g, "start", payload(img, `"env": {"ENGINE_HEALTH": "never", "ENGINE_EXIT_AFTER": "300ms", "ENGINE_EXIT_CODE": "5"}`, hc)),
		job.ErrNotReady.Error(), "exited with code 5 before it was healthy")
	rec := e.record(g)
	if rec.Status != runtime.StatusStopped || rec.CurrentImageRef != img {
		t.Fatalf("record %+v", rec)
	}
	e.wantEvents(g, "runtime.running:job_start", "job.failed", "runtime.stopped:observed_die")
	rs, err := e.store.CrashReports(context.Background(), g, 10)
	if err != nil || len(rs) != 1 || rs[0].ExitCode == nil || *rs[0].ExitCode != 5 {
		t.Fatalf("crash reports %+v, %v", rs, err)
	}
}

// TestStartTimesOutStarting: a payload health check on the plain image
// (no HEALTHCHECK of its own) with a long start period stays "starting";
// the job fails when its ready timeout (2 s) runs out, quoting the last
// probe.
func TestStartTimesOutStarting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	const g = "slow"
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "retries": 1, "start_period_ms": 600000}`
	e.failedFor(e.insert(g, "start", payload(e.image, `"env": {"ENGINE_HEALTH": "never"}`, hc, `"ready_timeout_seconds": 2`)),
		"is still starting after the ready timeout of 2s", "503 not ready: never healthy")
	rec := e.record(g)
	if rec.Status != runtime.StatusRunning || e.dockerHealth(rec.CurrentContainerID) != "starting" {
		t.Fatalf("record %+v", rec)
	}
	e.waitHealth(g, runtime.HealthStarting)
}

// TestStartPayloadHealthcheck: the payload's health check is the
// container's (Docker's CMD form) on an image that has none, and gates
// the start: the engine answers 503 for its first second, within the
// check's start period (failed probes do not count then).
func TestStartPayloadHealthcheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	const g = "probed"
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 100, "timeout_ms": 2000, "retries": 3, "start_period_ms": 600000}`
	e.succeeded(e.insert(g, "start", payload(e.image, `"env": {"ENGINE_HEALTH": "after:1s"}`, hc, `"ready_timeout_seconds": 60`)))
	rec := e.record(g)
	insp, err := e.cli.ContainerInspect(context.Background(), rec.CurrentContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := insp.Container.Config.Healthcheck
	if got == nil || !slices.Equal(got.Test, []string{"CMD", "/engine", "healthcheck"}) || got.Interval != 100*time.Millisecond ||
		got.Timeout != 2*time.Second || got.Retries != 3 || got.StartPeriod != 10*time.Minute {
		t.Fatalf("container health check %+v", got)
	}
	if h := e.dockerHealth(rec.CurrentContainerID); h != "healthy" {
		t.Fatalf("Docker says %q when the start job has succeeded", h)
	}
	e.waitHealth(g, runtime.HealthHealthy)

	if c, err := e.eng.InspectContainer(context.Background(), rec.CurrentContainerID); err != nil || !c.HasHealthcheck {
		t.Fatalf("the payload's health check is not seen on its container: %+v, %v", c, err)
	}

	// The plain image without a payload health check: no wait, no health.
	e.succeeded(e.insert("plain", "start", payload(e.image)))
	if c, err := e.eng.InspectContainer(context.Background(), e.record("plain").CurrentContainerID); err != nil || c.HasHealthcheck || c.Health != "" {
		t.Fatalf("a container without a health check: %+v, %v", c, err)
	}
}

// TestRestartWaitsForHealth: a restart is gated on the container's own
// health check, which Docker restarts from "starting".
func TestRestartWaitsForHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "again"
	e.succeeded(e.insert(g, "start", payload(img)))
	first := e.record(g)
	e.succeeded(e.insert(g, "restart", `{"timeout_seconds": 5, "ready_timeout_seconds": 60}`))
	if h := e.dockerHealth(first.CurrentContainerID); h != "healthy" {
		t.Fatalf("Docker says %q when the restart has succeeded", h)
	}
	if rec := e.record(g); rec.CurrentContainerID != first.CurrentContainerID || !rec.StartedAt.After(*first.StartedAt) {
		t.Fatalf("record after the restart %+v (before %+v)", rec, first)
	}
	e.waitHealth(g, runtime.HealthHealthy)
}

// TestChangeImageNotHealthyRollsBack: the new engine never becomes
// healthy; the job removes it, gives the old container its name back and
// starts it again: the record keeps naming the old container and image,
// and the outbox says the old engine runs again, then why the job failed.
// The events watcher runs: the new container's death must not reach the
// record.
func TestChangeImageNotHealthyRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.runWatcher()
	e.run()
	const g = "nope"
	e.succeeded(e.insert(g, "start", payload(e.image)))
	before := e.record(g)

	e.failedFor(e.insert(g, "change_image", payload(img, `"env": {"ENGINE_HEALTH": "never"}`, `"ready_timeout_seconds": 30`)),
		job.ErrNotReady.Error(), "is unhealthy", "503 not ready: never healthy", "rolled back", "runs again")
	e.checkRolledBack(g, before)
}

// TestChangeImageCrashRollsBack: the new engine exits at once (code 3)
// before its health check passed; the same rollback.
func TestChangeImageCrashRollsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.runWatcher()
	e.run()
	const g = "crashy"
	e.succeeded(e.insert(g, "start", payload(e.image)))
	before := e.record(g)

	// The payload's check keeps the image's command and gives a start
	// period, so the engine is "starting" until it exits.
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	e.failedFor(e.insert(g, "change_image", payload(img,
		`"env": {"ENGINE_HEALTH": "never", "ENGINE_EXIT_AFTER": "300ms", "ENGINE_EXIT_CODE": "3"}`, hc, `"ready_timeout_seconds": 30`)),
		job.ErrNotReady.Error(), "exited with code 3 before it was healthy", "rolled back", "runs again")
	e.checkRolledBack(g, before)
}

// checkRolledBack asserts the state after a rolled back image change of
// game g, whose record was before.
func (e *env) checkRolledBack(g string, before runtime.RuntimeRecord) {
	e.t.Helper()
	cs := e.containers(g)
	if len(cs) != 1 || cs[0].ID != before.CurrentContainerID || cs[0].Name != runtime.ContainerName(g) || !cs[0].Running || cs[0].Image != e.image {
		e.t.Fatalf("containers after the rollback: %+v (the old one is %s)", cs, before.CurrentContainerID)
	}
	after := e.record(g)
	if after.Status != runtime.StatusRunning || after.CurrentContainerID != before.CurrentContainerID || after.CurrentImageRef != e.image ||
		after.CurrentImageDigest != before.CurrentImageDigest || !after.StartedAt.After(*before.StartedAt) {
		e.t.Fatalf("record after the rollback %+v (before %+v)", after, before)
	}
	e.wantEvents(g, "runtime.running:job_start", "job.succeeded", "runtime.running:job_change_image", "job.failed")
	if id, img := e.eventField(g, "runtime.running", "container_id"), e.eventField(g, "runtime.running", "image_ref"); id != before.CurrentContainerID || img != e.image {
		e.t.Fatalf("the last runtime.running names container %s of %s, want the old %s of %s", id, img, before.CurrentContainerID, e.image)
	}
}

// TestChangeImageCancelledWhileWaiting: a cancel that comes while the job
// waits for the new engine ends the job cancelled, with the old container
// back under the game's name and running, and the record still naming it.
func TestChangeImageCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "halt"
	e.succeeded(e.insert(g, "start", payload(e.image)))
	before := e.record(g)
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	id := e.insert(g, "change_image", payload(img, `"env": {"ENGINE_HEALTH": "never"}`, hc, `"ready_timeout_seconds": 600`))
	wait.For(t, time.Minute, "the new engine to be starting", func() bool {
		for _, c := range e.containers(g) {
			if c.Image == img && c.Running && c.Health == "starting" {
				return true
			}
		}
		return false
	})
	if _, err := e.store.Pool().Exec(context.Background(), `UPDATE jobs SET cancel_requested_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if j := e.finished(id); j.Status != job.StatusCancelled {
		t.Fatalf("job ended %s: %q", j.Status, j.LastError)
	}
	cs := e.containers(g)
	if len(cs) != 1 || cs[0].ID != before.CurrentContainerID || cs[0].Name != runtime.ContainerName(g) || !cs[0].Running {
		t.Fatalf("containers after the cancel: %+v", cs)
	}
	after := e.record(g)
	if after.CurrentContainerID != before.CurrentContainerID || after.CurrentImageRef != e.image || after.Status != runtime.StatusRunning {
		t.Fatalf("record after the cancel %+v", after)
	}
	// The old engine was stopped and started again: the cancel commits
	// that restart, so the record's start time is the engine's.
	if !after.StartedAt.After(*before.StartedAt) {
		t.Fatalf("record's start time after the cancel %v, before %v: the old engine's new run is not recorded", after.StartedAt, before.StartedAt)
	}
	e.wantEvents(g, "runtime.running:job_start", "job.succeeded", "runtime.running:job_change_image", "job.cancelled")
}

// TestStartCancelledWhileWaiting: a start cancelled while it waits for
// its engine to be healthy ends cancelled, and the record says what is
// true: the engine it started runs (job_start), as the Game Master's
// cancel came too late to prevent it.
func TestStartCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.healthyImage()
	e.run()
	const g = "late"
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	id := e.insert(g, "start", payload(img, `"env": {"ENGINE_HEALTH": "never"}`, hc, `"ready_timeout_seconds": 600`))
	wait.For(t, time.Minute, "the engine to be starting", func() bool {
		cs := e.containers(g)
		return len(cs) == 1 && cs[0].Running && cs[0].Health == "starting"
	})
	if _, err := e.store.Pool().Exec(context.Background(), `UPDATE jobs SET cancel_requested_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if j := e.finished(id); j.Status != job.StatusCancelled {
		t.Fatalf("job ended %s: %q", j.Status, j.LastError)
	}
	rec := e.record(g)
	cs := e.containers(g)
	if rec.Status != runtime.StatusRunning || len(cs) != 1 || rec.CurrentContainerID != cs[0].ID || rec.CurrentImageRef != img {
		t.Fatalf("after the cancelled start: record %+v, containers %+v", rec, cs)
	}
	e.waitHealth(g, runtime.HealthStarting)
	e.wantEvents(g, "runtime.running:job_start", "job.cancelled", "runtime.health:reconcile_health")
}

// TestRestartNotReadyFails: a restart of an engine that does not become
// healthy in time fails for good, and commits its restart with the
// failure: the record says the engine runs again (job_restart), starting.
func TestRestartNotReadyFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run()
	const g = "stuck"
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	e.failedFor(e.insert(g, "start", payload(e.image, `"env": {"ENGINE_HEALTH": "never"}`, hc, `"ready_timeout_seconds": 1`)),
		"is still starting after the ready timeout of 1s")
	first := e.record(g)
	e.waitHealth(g, runtime.HealthStarting)
	j := e.failedFor(e.insert(g, "restart", `{"timeout_seconds": 5, "ready_timeout_seconds": 1}`),
		"restart game stuck: engine not ready", "is still starting after the ready timeout of 1s", "503 not ready: never healthy")
	rec := e.record(g)
	if rec.Status != runtime.StatusRunning || rec.CurrentContainerID != first.CurrentContainerID || !rec.StartedAt.After(*first.StartedAt) {
		t.Fatalf("record after the failed restart %+v (before %+v)", rec, first)
	}
	e.waitHealth(g, runtime.HealthStarting)
	e.wantEvents(g, "runtime.running:job_start", "job.failed", "runtime.health:reconcile_health",
		"runtime.running:job_restart", "job.failed", "runtime.health:reconcile_health")
	if id := e.eventField(g, "runtime.running", "job_id"); id != fmt.Sprint(j.ID) {
		t.Fatalf("the restart's transition names job %q, want %d", id, j.ID)
	}
}

// cancelAfterStart is the real engine, except that once a container has
// started it asks for the cancel of the game's running job and answers
// only when the worker has cut the job's context (seen through the
// context the job created its container with). It then answers as the
// SDK does when its call's context is done: with the context's error,
// though the daemon started the engine. The cancel thus lands inside the
// start call, the narrowest window.
type cancelAfterStart struct {
	*engine.Docker
	cancel func()
	jobCtx chan context.Context
}

func (c cancelAfterStart) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (engine.Container, error) {
	select {
	case c.jobCtx <- ctx:
	default:
	}
	return c.Docker.CreateContainer(ctx, spec)
}

func (c cancelAfterStart) StartContainer(ctx context.Context, id string) error {
	if err := c.Docker.StartContainer(ctx, id); err != nil {
		return err
	}
	c.cancel()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	select {
	case job := <-c.jobCtx:
		select {
		case <-job.Done():
		case <-deadline.C:
		}
	case <-deadline.C:
	}
	return ctx.Err()
}

// TestStartCancelledRightAfterTheEngineStarted: a cancel that comes while
// Docker starts a gated start's engine, before the daemon's answer, still
// leaves the record saying the engine runs (job_start, then
// job.cancelled): the start call is not cut, the cancel is seen right
// after it. (Without a health check there is nothing left to cut: the job
// succeeds.)
func TestStartCancelledRightAfterTheEngineStarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const g = "cut"
	eng := cancelAfterStart{Docker: e.eng, jobCtx: make(chan context.Context, 1), cancel: func() {
		if _, err := e.store.Pool().Exec(context.Background(),
			`UPDATE jobs SET cancel_requested_at = now() WHERE game_id = $1 AND status = 'running'`, g); err != nil {
			t.Error(err)
		}
	}}
	e.runWith(executor.New(eng, executor.Config{Records: e.store, StateRoot: e.root, Health: e.store}))
	hc := `"healthcheck": {"command": ["/engine", "healthcheck"], "interval_ms": 200, "start_period_ms": 600000}`
	if j := e.finished(e.insert(g, "start", payload(e.image, `"env": {"ENGINE_HEALTH": "never"}`, hc, `"ready_timeout_seconds": 600`))); j.Status != job.StatusCancelled {
		t.Fatalf("job ended %s: %q", j.Status, j.LastError)
	}
	rec := e.record(g)
	cs := e.containers(g)
	if rec.Status != runtime.StatusRunning || len(cs) != 1 || rec.CurrentContainerID != cs[0].ID || !cs[0].Running {
		t.Fatalf("after the cancelled start: record %+v, containers %+v", rec, cs)
	}
	e.waitHealth(g, runtime.HealthStarting)
	e.wantEvents(g, "runtime.running:job_start", "job.cancelled", "runtime.health:reconcile_health")
}

// wantEvents fails unless the game's outbox holds exactly want, in order
// (type:reason, see events).
func (e *env) wantEvents(gameID string, want ...string) {
	e.t.Helper()
	if got := e.events(gameID); !slices.Equal(got, want) {
		e.t.Fatalf("events of game %s:\n got %v\nwant %v", gameID, got, want)
	}
}
