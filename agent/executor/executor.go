// Package executor performs lifecycle jobs on Docker: it turns a validated
// job (worker.Task) into engine calls and the record transition they
// justify, which the worker commits with the job's outcome.
//
// Every operation is idempotent, because a job runs again after its agent
// died or its attempt failed: a start adopts the container an earlier
// attempt created, a stop of a stopped container and a remove of a gone
// one succeed, an image change resumes where it stopped. Before any Docker
// call the executor reads the game's record: anything on a removed record
// fails with runtime.ErrRemoved and touches nothing, except a remove job
// whose goal was reached after it was enqueued (see removedForThisJob),
// which succeeds with nothing to write.
//
// A job's record transition carries the job's reason and id. The events
// watcher may record the same change first (it attributes the steps the
// game's job in progress asks for to that job, see package outbox), so
// every decision is idempotent against it: it compares the record with the
// daemon's times of what the job did (the run it started, the exit it
// caused) and writes nothing when the record already says it. Record times
// come from the store's clock at commit, which is after the daemon's
// events of the operation, so a late event of the job is recognised as
// old. A job that leaves the engine running looks at its container again
// when it commits (worker.Result.Check): an engine that died before the
// record named it is recorded then, after the job's change and outcome, as
// the die it was (observed_die).
//
// A start, restart or image change of an engine with a health check (its
// image's, or the payload's) succeeds only once Docker says it is healthy,
// within the job's ready timeout (see awaitReady). One that is not fails
// for good with job.ErrNotReady, and its record change commits with the
// failure (see worker.Result.Record), so the record says the engine runs;
// an image change puts the old container back instead (see rolledBack).
package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/imageuse"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// RecordReader reads a game's record; *db.Store implements it. It returns
// an error wrapping runtime.ErrNotFound when the game has none.
type RecordReader interface {
	GetRecord(ctx context.Context, gameID string) (runtime.RuntimeRecord, error)
}

// Renamer is the optional engine capability an image change uses to move
// the old container aside; *engine.Docker has it. Without it the old
// container is removed before the new one is created, and a failed change
// cannot fall back to it.
type Renamer interface {
	RenameContainer(ctx context.Context, id, newName string) error
}

// Config configures an Executor.
type Config struct {
	// Records is read before any Docker call; required.
	Records RecordReader
	// StateRoot is the policy's state root, against which the state
	// directory of an image change (taken from the record) is checked on
	// the filesystem, as a start's is.
	StateRoot string
	// StateMountTarget is where the state directory appears in the
	// engine container (default engine.DefaultStateMountTarget).
	StateMountTarget string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Images, when set, is the guard shared with image garbage
	// collection: a job holds its image while it makes it present and
	// creates its container, so the collector never removes it under the
	// job.
	Images *imageuse.Guard
	// Crash bounds the output kept in the crash report of an engine found
	// exited when a job commits (observed_die); zero fields take the
	// defaults.
	Crash crash.Limits
	// Health, when set, records the health of an engine a job waited
	// for, once the job's outcome has committed (see HealthRecorder);
	// without it the watcher's next health event or the relist tells.
	Health HealthRecorder
}

// Executor implements worker.Executor on an engine.
type Executor struct {
	eng engine.Engine
	cfg Config
	log *slog.Logger
}

var _ worker.Executor = (*Executor)(nil)

// New returns an executor on eng.
func New(eng engine.Engine, cfg Config) *Executor {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Executor{eng: eng, cfg: cfg, log: log}
}

// Execute implements worker.Executor.
func (e *Executor) Execute(ctx context.Context, t worker.Task) (worker.Result, error) {
	if e.cfg.Records == nil {
		return worker.Result{}, errors.New("executor: no record reader configured")
	}
	if t.Spec.ImageRef != "" {
		defer e.cfg.Images.Use(t.Spec.ImageRef)()
	}
	if t.Spec.Kind == job.KindPull {
		// A pull touches no container and no record: it runs whatever
		// the game's record says, removed included.
		return e.pull(ctx, t)
	}
	rec, err := e.record(ctx, t.Spec.GameID)
	if err != nil {
		return worker.Result{}, err
	}
	if rec != nil && rec.Status == runtime.StatusRemoved {
		if t.Spec.Kind == job.KindRemove && removedForThisJob(*rec, t.Job) {
			e.log.Info("remove job: the game was removed after the job was enqueued; nothing left to do",
				"game_id", t.Spec.GameID, "job_id", t.Job.ID, "attempt", t.Job.Attempt, "removed_at", rec.RemovedAt)
			return worker.Result{}, nil
		}
		return worker.Result{}, fmt.Errorf("%s job for game %s: %w", t.Spec.Kind, t.Spec.GameID, runtime.ErrRemoved)
	}
	if rec != nil && rec.HostID != t.HostID {
		return worker.Result{}, job.Permanent(fmt.Errorf("%s job for game %s: the game lives on host %q, not %q", t.Spec.Kind, t.Spec.GameID, rec.HostID, t.HostID))
	}
	switch t.Spec.Kind {
	case job.KindStart:
		return e.start(ctx, t, rec)
	case job.KindChangeImage:
		return e.changeImage(ctx, t, rec)
	}
	// The other kinds act on an existing game.
	if rec == nil {
		return worker.Result{}, job.Permanent(fmt.Errorf("%s job for game %s: %w", t.Spec.Kind, t.Spec.GameID, runtime.ErrNotFound))
	}
	switch t.Spec.Kind {
	case job.KindStop:
		return e.stop(ctx, t, *rec)
	case job.KindRestart:
		return e.restart(ctx, t, *rec)
	case job.KindRemove:
		return e.remove(ctx, t, *rec)
	default:
		return worker.Result{}, job.Permanent(fmt.Errorf("%w: %q", job.ErrUnknownKind, t.Spec.Kind))
	}
}

// removedForThisJob reports whether a remove job finds its goal reached
// rather than a game that was gone before it was asked for: the removal
// came after the job was enqueued, or an earlier attempt ran. That is
// the at-least-once case: an attempt removed the container and died (or
// failed) before its commit, and the events watcher or a relist recorded
// the removal meanwhile. A remove enqueued for a game already removed
// still fails with runtime.ErrRemoved.
func removedForThisJob(rec runtime.RuntimeRecord, j db.Job) bool {
	return j.Attempt > 1 || (rec.RemovedAt != nil && !rec.RemovedAt.Before(j.CreatedAt))
}

// record returns the game's record, nil when it has none.
func (e *Executor) record(ctx context.Context, gameID string) (*runtime.RuntimeRecord, error) {
	rec, err := e.cfg.Records.GetRecord(ctx, gameID)
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the record of game %s: %w", gameID, err)
	}
	return &rec, nil
}

// containerSpec is the engine container of a start or an image change.
func (e *Executor) containerSpec(t worker.Task, image, mountSource string, env []string, l job.Limits) engine.ContainerSpec {
	return engine.ContainerSpec{
		GameID:           t.Spec.GameID,
		HostID:           t.HostID,
		JobID:            t.Job.ID,
		Name:             runtime.ContainerName(t.Spec.GameID),
		Image:            image,
		Env:              env,
		StatePath:        mountSource,
		StateMountTarget: e.cfg.StateMountTarget,
		Network:          t.Network,
		MemoryBytes:      l.MemoryBytes,
		NanoCPUs:         l.NanoCPUs,
		PidsLimit:        l.PidsLimit,
		Healthcheck:      healthcheck(t.Spec.Healthcheck),
	}
}

// prepare ensures the network and the image.
func (e *Executor) prepare(ctx context.Context, t worker.Task) (engine.Image, error) {
	if t.Network != "" {
		if err := e.eng.EnsureNetwork(ctx, t.Network); err != nil {
			return engine.Image{}, fmt.Errorf("ensure network %s: %w", t.Network, err)
		}
	}
	return e.ensureImage(ctx, t.Spec.ImageRef)
}

// engineErr marks engine errors that no retry can fix as permanent: a
// container squatting the game's name that is not ours, or ours for
// another game; an image its registry does not have or refuses to serve.
func engineErr(err error) error {
	for _, sentinel := range []error{
		engine.ErrNotManaged, engine.ErrNameConflict, engine.ErrInvalidSpec,
		engine.ErrImageNotFound, engine.ErrRegistryAuth,
	} {
		if errors.Is(err, sentinel) {
			return job.Permanent(err)
		}
	}
	return err
}

func details(reason outbox.Reason, jobID int64) outbox.TransitionDetails {
	return outbox.TransitionDetails{Reason: reason, JobID: jobID, RequestedByJob: true}
}

// started returns the daemon's start time of the run the job just began in
// container id, read back from Docker, and that look at the container (the
// readiness wait starts from it). The engine runs once started, whatever
// happens to the job, so a cancel does not cut this read short: the
// record change the job then returns commits with the cancel.
func (e *Executor) started(ctx context.Context, id string) (time.Time, *engine.Container, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkTimeout)
	defer cancel()
	c, err := e.eng.InspectContainer(ctx, id)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("read the start time of container %s: %w", id, engineErr(err))
	}
	if c.StartedAt.IsZero() {
		return time.Time{}, nil, fmt.Errorf("container %s reports no start time", id)
	}
	return c.StartedAt.UTC().Truncate(time.Microsecond), &c, nil
}

// endedSince reports whether a record bound to the job's container already
// shows the run the job started (at runStartedAt) as ended: another writer
// recorded the start and the exit that followed.
func endedSince(cur runtime.RuntimeRecord, runStartedAt time.Time) bool {
	return cur.Status == runtime.StatusStopped && cur.StoppedAt != nil && !cur.StoppedAt.Before(runStartedAt)
}

// checkTimeout bounds the look at a container inside a job's commit.
const checkTimeout = 10 * time.Second

// startTimeout bounds a container's start, which a cancel does not cut.
const startTimeout = time.Minute

// exitedSince is the Check of a job that left the game running in
// container id (see worker.Result.Check): at commit time, under the game's
// lock, it looks at the container again and, if the engine has exited,
// records the exit the way the events watcher records a die (observed_die,
// unless the game's job in progress by then claims it). The watcher may
// have seen that die before the record named the container (a new
// container: no record or a stale one yet) or taken it for a step of the
// job's own operation (a restart's die), and would not report it; if the
// engine dies after this look, the watcher sees the die after the commit.
// A failed look records nothing: the watcher and the relist remain.
func (e *Executor) exitedSince(id string) db.ObservedDecision {
	return func(cur *runtime.RuntimeRecord, active *outbox.ActiveJob, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		none := outbox.TransitionDetails{}
		if cur == nil {
			return runtime.RuntimeRecord{}, none, runtime.ErrNotFound
		}
		if cur.Status != runtime.StatusRunning || cur.CurrentContainerID != id {
			return *cur, none, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		c, err := e.eng.InspectContainer(ctx, id)
		if err != nil {
			if !errors.Is(err, engine.ErrNotFound) { // gone: its destroy event tells
				e.log.Warn("could not look at the container after the job; the events watcher and the relist will tell", "container_id", id, "err", err)
			}
			return *cur, none, nil
		}
		if c.State != "exited" && c.State != "dead" {
			return *cur, none, nil
		}
		d, report := outbox.Attribute(active, outbox.StepExit, outbox.ReasonObservedDie)
		if !report {
			return *cur, none, nil
		}
		code := c.ExitCode
		d.ExitCode, d.OOM = &code, c.OOMKilled
		next, err := cur.Stop(id, at)
		if err == nil && reconcile.IsCrash(next, d) {
			d.Crash = reconcile.CaptureCrash(ctx, e.eng, e.cfg.Crash, next, d, e.log)
		}
		return next, d, err
	}
}

// start creates (or adopts) and starts the game's container.
func (e *Executor) start(ctx context.Context, t worker.Task, rec *runtime.RuntimeRecord) (worker.Result, error) {
	g, image := t.Spec.GameID, t.Spec.ImageRef
	if rec != nil && rec.Status == runtime.StatusRunning && rec.CurrentContainerID != "" {
		c, err := e.eng.InspectContainer(ctx, rec.CurrentContainerID)
		switch {
		case err == nil && c.Running && c.Image == image:
			// Already what was asked for: succeed without change once
			// it is ready (the record names it: the watcher follows its
			// health).
			if err := e.awaitReady(ctx, t, c.ID, &c); err != nil {
				return worker.Result{}, fmt.Errorf("start game %s: %w", g, err)
			}
			return worker.Result{}, nil
		case err == nil && c.Running:
			return worker.Result{}, job.Permanent(fmt.Errorf("start game %s: it is running image %s, not %s; use an image change", g, c.Image, image))
		case err != nil && !errors.Is(err, engine.ErrNotFound):
			return worker.Result{}, fmt.Errorf("start game %s: %w", g, engineErr(err))
		}
	}
	mount, err := ensureStateDir(e.cfg.StateRoot, g, t.Spec.StatePath)
	if err != nil {
		return worker.Result{}, fmt.Errorf("start game %s: %w", g, err)
	}
	img, err := e.prepare(ctx, t)
	if err != nil {
		return worker.Result{}, fmt.Errorf("start game %s: %w", g, err)
	}
	spec := e.containerSpec(t, image, mount, t.Spec.Env, t.Spec.Limits)
	c, err := e.createContainer(ctx, spec, &img)
	if err != nil {
		return worker.Result{}, fmt.Errorf("start game %s: %w", g, engineErr(err))
	}
	if c.Image != image {
		// An old container of this game (stopped, another image) holds
		// the name. Starting it would run the wrong image: replace it.
		if c.Running {
			return worker.Result{}, job.Permanent(fmt.Errorf("start game %s: container %s runs image %s, not %s; use an image change", g, c.ID, c.Image, image))
		}
		if err := e.eng.RemoveContainer(ctx, c.ID); err != nil {
			return worker.Result{}, fmt.Errorf("start game %s: replace its stopped container of image %s: %w", g, c.Image, engineErr(err))
		}
		if c, err = e.createContainer(ctx, spec, &img); err != nil {
			return worker.Result{}, fmt.Errorf("start game %s: %w", g, engineErr(err))
		}
	}
	res := worker.Result{ImageDigest: img.Digest}
	if c, err = e.startContainer(ctx, t, spec, c); err != nil {
		return res, fmt.Errorf("start game %s: %w", g, engineErr(err))
	}
	runStart, seen, err := e.started(ctx, c.ID)
	if err != nil {
		return res, fmt.Errorf("start game %s: %w", g, err)
	}
	placement := runtime.Placement{
		GameID: g, HostID: t.HostID, EngineEndpoint: runtime.EngineEndpointFor(g),
		StatePath: t.Spec.StatePath, DockerNetwork: t.Network,
	}
	id, jobID, digest := c.ID, t.Job.ID, img.Digest
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		d := details(outbox.ReasonJobStart, jobID)
		if cur == nil {
			r, err := runtime.Create(placement, id, image, at)
			return r.WithImageDigest(digest), d, err
		}
		if cur.CurrentContainerID == id && endedSince(*cur, runStart) {
			// The watcher recorded this start (as the job's) and the
			// engine's death right after it (as observed).
			return *cur, outbox.TransitionDetails{}, nil
		}
		if cur.Status == runtime.StatusRunning && cur.CurrentContainerID != id {
			// The record's container is gone (checked above) and events
			// have not told yet: the new container replaces it.
			r, err := cur.ChangeImage(id, image, at)
			return r.WithImageDigest(digest), d, err
		}
		r, err := cur.Start(id, image, at)
		return r.WithImageDigest(digest), d, err
	}
	res.Check = e.exitedSince(id)
	if err := e.awaitReady(ctx, t, id, seen); err != nil {
		return e.gateFailed(res, t, id, seen, fmt.Errorf("start game %s: %w", g, err))
	}
	res.AfterCommit = e.recordHealth(t, id, seen)
	return res, nil
}

// gateFailed is the outcome of a job whose engine runs (or ran) but whose
// readiness wait did not end healthy. The record change goes with the
// error: the worker commits it when the job fails for good (not ready) or
// is cancelled during the wait, so the record says what is true (the job
// started the engine; its health, or its exit through Check), and drops
// it when the job is retried or released, whose next attempt adopts the
// engine.
func (e *Executor) gateFailed(res worker.Result, t worker.Task, id string, seen *engine.Container, err error) (worker.Result, error) {
	res.AfterCommit = chain(res.AfterCommit, e.recordHealth(t, id, seen))
	return res, err
}

// createContainer creates the job's container from img. The engine
// takes an image it made present to stay so; when the daemon no longer
// has it (removed since, by someone other than this agent's image
// collector, which tells the engine), the engine has forgotten it and the
// image is made present again — pulled — for a second create.
func (e *Executor) createContainer(ctx context.Context, spec engine.ContainerSpec, img *engine.Image) (engine.Container, error) {
	c, err := e.eng.CreateContainer(ctx, spec)
	if !errors.Is(err, engine.ErrImageMissing) {
		return c, err
	}
	again, err := e.ensureImage(ctx, spec.Image)
	if err != nil {
		return engine.Container{}, err
	}
	*img = again
	return e.eng.CreateContainer(ctx, spec)
}

// startContainer starts the job's container c. One whose network is gone
// (removed under the agent: the container names the network that was)
// cannot start; it holds nothing of the game's (the state is in the
// bind-mounted directory), so it is replaced by one on the network made
// again.
//
// A cancel does not cut the start call short. Cutting it would not stop
// the daemon, only the wait for its answer: the engine would run while
// the job ended with no record of it. The call is bounded instead, and the
// cancel is seen right after it, when the job returns its record change.
func (e *Executor) startContainer(ctx context.Context, t worker.Task, spec engine.ContainerSpec, c engine.Container) (engine.Container, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
	defer cancel()
	err := e.eng.StartContainer(ctx, c.ID)
	if !errors.Is(err, engine.ErrNetworkMissing) || t.Network == "" {
		return c, err
	}
	e.log.Warn("the game's container names a network that is gone; creating it again", "game_id", t.Spec.GameID, "network", t.Network, "container_id", c.ID)
	if err := e.eng.RemoveContainer(ctx, c.ID); err != nil {
		return c, fmt.Errorf("remove container %s, whose network is gone: %w", c.ID, err)
	}
	if err := e.eng.EnsureNetwork(ctx, t.Network); err != nil {
		return c, fmt.Errorf("ensure network %s: %w", t.Network, err)
	}
	if c, err = e.eng.CreateContainer(ctx, spec); err != nil {
		return c, err
	}
	return c, e.eng.StartContainer(ctx, c.ID)
}

// stop stops the game's container gracefully.
func (e *Executor) stop(ctx context.Context, t worker.Task, rec runtime.RuntimeRecord) (worker.Result, error) {
	g, id := t.Spec.GameID, rec.CurrentContainerID
	if id == "" {
		return worker.Result{}, job.Permanent(fmt.Errorf("stop game %s: the record names no container", g))
	}
	var res worker.Result
	err := e.eng.StopContainer(ctx, id, t.Spec.StopTimeout)
	if errors.Is(err, engine.ErrNotFound) {
		res.Record = disposed(id)
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("stop game %s: %w", g, engineErr(err))
	}
	c, err := e.eng.InspectContainer(ctx, id)
	if err != nil {
		return res, fmt.Errorf("stop game %s: read the exit code: %w", g, engineErr(err))
	}
	code, oom, jobID := c.ExitCode, c.OOMKilled, t.Job.ID
	exited := c.FinishedAt.UTC().Truncate(time.Microsecond)
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("stop game %s: %w", g, runtime.ErrNotFound)
		}
		if cur.Status == runtime.StatusRunning && cur.CurrentContainerID == id && cur.StartedAt != nil && cur.StartedAt.After(exited) {
			// Started again after this stop, and recorded: not ours to undo.
			return *cur, outbox.TransitionDetails{}, nil
		}
		d := details(outbox.ReasonJobStop, jobID)
		d.ExitCode, d.OOM = &code, oom
		r, err := cur.Stop(id, at)
		return r, d, err
	}
	return res, nil
}

// disposed is the decision for a stop that finds the record's container
// gone: the record says so (removed), which is the truth the reconciler
// would also write, under its reason: the stop did not remove it.
func disposed(id string) db.Decision {
	return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, runtime.ErrNotFound
		}
		if cur.Status == runtime.StatusRemoved {
			// A reconcile pass or the watcher recorded it first.
			return *cur, outbox.TransitionDetails{}, nil
		}
		r, err := cur.Remove(id, at)
		return r, outbox.TransitionDetails{Reason: outbox.ReasonReconcileDispose}, err
	}
}

// restart restarts the game's container (the same container).
func (e *Executor) restart(ctx context.Context, t worker.Task, rec runtime.RuntimeRecord) (worker.Result, error) {
	g, id := t.Spec.GameID, rec.CurrentContainerID
	if id == "" {
		return worker.Result{}, job.Permanent(fmt.Errorf("restart game %s: the record names no container", g))
	}
	var res worker.Result
	if err := e.eng.RestartContainer(ctx, id, t.Spec.StopTimeout); err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			return res, job.Permanent(fmt.Errorf("restart game %s: its container %s is gone; start the game instead: %w", g, id, err))
		}
		return res, fmt.Errorf("restart game %s: %w", g, engineErr(err))
	}
	runStart, seen, err := e.started(ctx, id)
	if err != nil {
		return res, fmt.Errorf("restart game %s: %w", g, err)
	}
	jobID := t.Job.ID
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("restart game %s: %w", g, runtime.ErrNotFound)
		}
		// Unchanged when the watcher recorded this restart first.
		if at.Before(runStart) {
			at = runStart
		}
		r, err := cur.Restart(id, runStart, at)
		return r, details(outbox.ReasonJobRestart, jobID), err
	}
	res.Check = e.exitedSince(id)
	if err := e.awaitReady(ctx, t, id, seen); err != nil {
		return e.gateFailed(res, t, id, seen, fmt.Errorf("restart game %s: %w", g, err))
	}
	res.AfterCommit = e.recordHealth(t, id, seen)
	return res, nil
}

// remove force-removes the game's container; the state directory stays.
func (e *Executor) remove(ctx context.Context, t worker.Task, rec runtime.RuntimeRecord) (worker.Result, error) {
	g, id := t.Spec.GameID, rec.CurrentContainerID
	var res worker.Result
	if id != "" {
		if err := e.eng.RemoveContainer(ctx, id); err != nil {
			return res, fmt.Errorf("remove game %s: %w", g, engineErr(err))
		}
	}
	// A container of ours under the game's name that the record does not
	// name (an earlier attempt's leftover) goes too.
	if c, err := e.eng.InspectContainer(ctx, runtime.ContainerName(g)); err == nil && c.GameID == g {
		if err := e.eng.RemoveContainer(ctx, c.ID); err != nil {
			return res, fmt.Errorf("remove game %s: %w", g, engineErr(err))
		}
	}
	jobID := t.Job.ID
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("remove game %s: %w", g, runtime.ErrNotFound)
		}
		if cur.Status == runtime.StatusRemoved {
			// Between our removal and this commit the events watcher
			// recorded it (as this job's), or an earlier attempt's
			// removal was recorded: the job's goal is reached, with no
			// change left to write.
			return *cur, outbox.TransitionDetails{}, nil
		}
		r, err := cur.Remove("", at)
		return r, details(outbox.ReasonJobRemove, jobID), err
	}
	return res, nil
}

// asideName is the name the old container of an image change is moved to.
func asideName(gameID string, jobID int64) string {
	return runtime.ContainerName(gameID) + "-old-" + strconv.FormatInt(jobID, 10)
}
