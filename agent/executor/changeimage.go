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
// When step 3 fails the new container is removed, the old one gets its
// name back and is started again if it was running; the record still
// names it. A retry after a crash resumes: the old container is already
// aside and stopped, and the new one is adopted by name.
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
	created, err := e.createAndStart(ctx, spec)
	if err != nil {
		if old != nil && canRename {
			e.rollback(ctx, t, old.ID, created, wasRunning, renamer)
		}
		return res, fmt.Errorf("change the image of game %s: %w", g, err)
	}

	newID, jobID, digest := created, t.Job.ID, img.Digest
	res.Record = func(cur *runtime.RuntimeRecord, at time.Time) (runtime.RuntimeRecord, outbox.TransitionDetails, error) {
		if cur == nil {
			return runtime.RuntimeRecord{}, outbox.TransitionDetails{}, fmt.Errorf("change the image of game %s: %w", g, runtime.ErrNotFound)
		}
		r, err := cur.ChangeImage(newID, image, at)
		return r.WithImageDigest(digest), details(outbox.ReasonJobChangeImage, jobID), err
	}
	res.Check = e.exitedSince(newID)
	if old != nil && canRename {
		oldCID := old.ID
		res.AfterCommit = func(ctx context.Context) error {
			if err := e.eng.RemoveContainer(ctx, oldCID); err != nil {
				return fmt.Errorf("remove the replaced container %s of game %s: %w", oldCID, g, err)
			}
			return nil
		}
	}
	return res, nil
}

// createAndStart creates (or adopts) the new container and starts it. It
// returns the id of the container it created, also on error ("" if none).
func (e *Executor) createAndStart(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	c, err := e.eng.CreateContainer(ctx, spec)
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
		if c, err = e.eng.CreateContainer(ctx, spec); err != nil {
			return "", engineErr(err)
		}
	}
	if err := e.eng.StartContainer(ctx, c.ID); err != nil {
		return c.ID, engineErr(err)
	}
	return c.ID, nil
}

// rollback puts the old container back after a failed replacement. It runs
// on a fresh context: the job's may be the reason for the failure.
func (e *Executor) rollback(ctx context.Context, t worker.Task, oldID, newID string, wasRunning bool, renamer Renamer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	log := e.log.With("job_id", t.Job.ID, "game_id", t.Spec.GameID, "old_container", oldID)
	if newID != "" {
		if err := e.eng.RemoveContainer(ctx, newID); err != nil {
			log.Error("image change rollback: could not remove the new container", "container", newID, "err", err)
			return
		}
	}
	if err := renamer.RenameContainer(ctx, oldID, runtime.ContainerName(t.Spec.GameID)); err != nil {
		log.Error("image change rollback: could not give the old container its name back", "err", err)
		return
	}
	if wasRunning {
		if err := e.eng.StartContainer(ctx, oldID); err != nil {
			log.Error("image change rollback: could not start the old container again", "err", err)
			return
		}
	}
	log.Warn("image change failed; the old container is back", "running", wasRunning)
}
