package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// changeImage replaces the game's container by one of the new image on the
// same state directory. The order keeps the record truthful at every step:
//
//  1. pull the new image first, so a bad image leaves the old engine
//     running untouched;
//  2. stop the old container (the two must not share the state directory)
//     and rename it aside, freeing the game's name;
//  3. create and start the new container under the game's name;
//  4. the worker commits ChangeImage (the record now names the new
//     container) and only then, in AfterCommit, the old container is
//     removed, so its destroy event is stale for the watcher.
//
// With a health check (the new image's or the payload's), step 3 includes
// waiting until the new engine is healthy, within the job's ready
// timeout. When step 3 fails — the new container cannot be created or
// started, turns unhealthy, stays starting, or exits — the new container
// is removed, the old one gets its name back and is started again if it
// was running; the record still names it (see rolledBack). A retry after
// a crash resumes: the old container is already aside and stopped, and the
// new one is adopted by name.
func (e *Executor) changeImage(ctx context.Context, t worker.Task, rec *runtime.RuntimeRecord) (worker.Result, error) {
	g, image := t.Spec.GameID, t.Spec.ImageRef
	if rec == nil {
		return worker.Result{}, job.Permanent(fmt.Errorf("change the image of game %s: %w", g, runtime.ErrNotFound))
	}
	oldID := rec.CurrentContainerID
	var old *engine.Container
	if oldID != "" {
		c, err := e.eng.InspectContainer(ctx, oldID)
		switch {
		case err == nil:
			old = &c
		case !errors.Is(err, engine.ErrNotFound):
			return worker.Result{}, fmt.Errorf("change the image of game %s: %w", g, engineErr(err))
		}
	}
	if old != nil && rec.Status == runtime.StatusRunning && rec.CurrentImageRef == image && old.Running && old.Image == image {
		return worker.Result{}, nil // done already (a replay)
	}
	mount, err := ensureStateDir(e.cfg.StateRoot, g, rec.StatePath)
	if err != nil {
		return worker.Result{}, fmt.Errorf("change the image of game %s: %w", g, err)
	}
	img, err := e.prepare(ctx, t)
	if err != nil {
		return worker.Result{}, fmt.Errorf("change the image of game %s: %w", g, err)
	}

	res := worker.Result{ImageDigest: img.Digest}
	renamer, canRename := e.eng.(Renamer)
	wasRunning := false
	if old != nil {
		wasRunning = old.Running
		if err := e.eng.StopContainer(ctx, old.ID, t.Spec.StopTimeout); err != nil {
			return res, fmt.Errorf("change the image of game %s: stop the old container: %w", g, engineErr(err))
		}
		if canRename {
			if err := renamer.RenameContainer(ctx, old.ID, asideName(g, t.Job.ID)); err != nil {
				return res, fmt.Errorf("change the image of game %s: move the old container aside: %w", g, engineErr(err))
			}
		} else {
			if err := e.eng.RemoveContainer(ctx, old.ID); err != nil {
				return res, fmt.Errorf("change the image of game %s: remove the old container: %w", g, engineErr(err))
			}
		}
	}

	spec := e.containerSpec(t, image, mount, t.Spec.Env, t.Spec.Limits)
	created, err := e.createAndStart(ctx, t, spec, &img)
	res.ImageDigest = img.Digest
	if err == nil {
		// The old container stays aside until the new one is ready.
		err = e.awaitReady(ctx, t, created, nil)
	}
	if err != nil {
		err = fmt.Errorf("change the image of game %s: %w", g, err)
		if old != nil && canRename {
			return e.rolledBack(ctx, t, res, *old, created, wasRunning, renamer, err)
		}
		if created != "" && errors.Is(err, job.ErrNotReady) {
			// Nothing to go back to: the game runs the new image, not
			// ready, and its record says so with the failure.
			res.Record, res.Check = e.changedTo(t, created, img.Digest), e.exitedSince(created)
			return e.gateFailed(res, t, created, nil, err)
		}
		return res, err
	}

	res.Record = e.changedTo(t, created, img.Digest)
	res.Check = e.exitedSince(created)
	if old != nil && canRename {
		oldCID := old.ID
		res.AfterCommit = func(ctx context.Context) error {
			if err := e.eng.RemoveContainer(ctx, oldCID); err != nil {
				return fmt.Errorf("remove the replaced container %s of game %s: %w", oldCID, g, err)
			}
			return nil
		}
	}
	res.AfterCommit = chain(res.AfterCommit, e.recordHealth(t, created, nil))
	return res, nil
}

// changedTo is the record change of an image change to container newID.
func (e *Executor) changedTo(t worker.Task, newID, digest string) func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
	g, image, jobID := t.Spec.GameID, t.Spec.ImageRef, t.Job.ID
	return func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("change the image of game %s: %w", g, runtime.ErrNotFound)
		}
		r, err := cur.ChangeImage(newID, image, at)
		return r.WithImageDigest(digest), details(outbox.ReasonJobChangeImage, jobID), err
	}
}

// rolledBack puts the old container back after a failed replacement (see
// rollback) and returns the job's failure, which says so. The record
// keeps naming the old container and its image throughout; when the old
// engine was running, it was stopped and started again, so the failure
// commits that restart (job_change_image, running → running with its new
// start time): the outbox then reads "the engine of the old image runs
// again since T", then job.failed with why. Events of the new container
// never move the record (it never named it), and the old one's stop and
// start during the job are steps on the way of the job (see package
// outbox), so the watcher records neither.
func (e *Executor) rolledBack(ctx context.Context, t worker.Task, res worker.Result, old engine.Container, newID string, wasRunning bool, renamer Renamer, cause error) (worker.Result, error) {
	g := t.Spec.GameID
	runStart, rbErr := e.rollback(ctx, t, old.ID, newID, wasRunning, renamer)
	if rbErr != nil {
		return worker.Result{ImageDigest: res.ImageDigest}, fmt.Errorf("%w; the rollback failed too (the relist will record what is left): %v", cause, rbErr)
	}
	if !wasRunning {
		return worker.Result{ImageDigest: res.ImageDigest}, fmt.Errorf("%w; rolled back: container %s of image %s is back under the game's name, stopped as it was", cause, shortID(old.ID), old.Image)
	}
	oldID, jobID := old.ID, t.Job.ID
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("change the image of game %s: %w", g, runtime.ErrNotFound)
		}
		if cur.CurrentContainerID != oldID {
			return *cur, outbox.TransitionDetails{}, nil
		}
		if at.Before(runStart) {
			at = runStart
		}
		r, err := cur.Restart(oldID, runStart, at)
		return r, details(outbox.ReasonJobChangeImage, jobID), err
	}
	res.Check = e.exitedSince(oldID)
	res.AfterCommit = e.recordHealth(t, oldID, nil)
	return res, fmt.Errorf("%w; rolled back: container %s of image %s runs again", cause, shortID(old.ID), old.Image)
}

// createAndStart creates (or adopts) the new container and starts it, as a
// start does (createContainer pulls an image removed under the engine,
// startContainer makes a network removed under it again), so a change
// recovers within its attempt. It returns the id of the container it
// created, also on error ("" if none).
func (e *Executor) createAndStart(ctx context.Context, t worker.Task, spec engine.ContainerSpec, img *engine.Image) (string, error) {
	c, err := e.createContainer(ctx, spec, img)
	if err != nil {
		return "", engineErr(err)
	}
	if c.Image != spec.Image {
		// A leftover of ours under the game's name with another image.
		if c.Running {
			return "", job.Permanent(fmt.Errorf("container %s runs image %s under the game's name", c.ID, c.Image))
		}
		if err := e.eng.RemoveContainer(ctx, c.ID); err != nil {
			return "", engineErr(err)
		}
		if c, err = e.createContainer(ctx, spec, img); err != nil {
			return "", engineErr(err)
		}
	}
	if c, err = e.startContainer(ctx, t, spec, c); err != nil {
		return c.ID, engineErr(err)
	}
	return c.ID, nil
}

// rollback puts the old container back after a failed replacement: the
// new one is removed, the old one gets the game's name back and is started
// again if it was running. It returns the old engine's new start time
// (zero when it stays stopped). It runs on a fresh context: the job's may
// be the reason for the failure.
func (e *Executor) rollback(ctx context.Context, t worker.Task, oldID, newID string, wasRunning bool, renamer Renamer) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	log := e.log.With("job_id", t.Job.ID, "game_id", t.Spec.GameID, "old_container", oldID)
	if newID != "" {
		if err := e.eng.RemoveContainer(ctx, newID); err != nil {
			log.Error("image change rollback: could not remove the new container", "container", newID, "err", err)
			return time.Time{}, fmt.Errorf("remove the new container %s: %w", shortID(newID), err)
		}
	}
	if err := renamer.RenameContainer(ctx, oldID, runtime.ContainerName(t.Spec.GameID)); err != nil {
		log.Error("image change rollback: could not give the old container its name back", "err", err)
		return time.Time{}, fmt.Errorf("give the old container %s its name back: %w", shortID(oldID), err)
	}
	if !wasRunning {
		log.Warn("image change failed; the old container is back, stopped as it was")
		return time.Time{}, nil
	}
	if err := e.eng.StartContainer(ctx, oldID); err != nil {
		log.Error("image change rollback: could not start the old container again", "err", err)
		return time.Time{}, fmt.Errorf("start the old container %s again: %w", shortID(oldID), err)
	}
	runStart, _, err := e.started(ctx, oldID)
	if err != nil {
		return time.Time{}, err
	}
	log.Warn("image change failed; the old container runs again")
	return runStart, nil
}
