package executor

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/worker"
)

// pull makes the job's image present on the host; the job succeeds with
// the image's digest, which its job.succeeded event carries.
func (e *Executor) pull(ctx context.Context, t worker.Task) (worker.Result, error) {
	img, err := e.ensureImage(ctx, t.Spec.ImageRef)
	if err != nil {
		return worker.Result{}, err
	}
	e.log.Info("pull job: image present", "job_id", t.Job.ID, "image_ref", img.Ref, "image_digest", img.Digest,
		"pulled", img.Pull.Pulled, "pull_bytes", img.Pull.Bytes, "pull_duration", img.Pull.Duration)
	return worker.Result{ImageDigest: img.Digest}, nil
}

// ensureImage makes ref present (see engine.Docker.EnsureImage) and puts
// what the pull did on the job's span. Errors no retry can fix (no such
// image, credentials refused) are permanent.
func (e *Executor) ensureImage(ctx context.Context, ref string) (engine.Image, error) {
	img, err := e.eng.EnsureImage(ctx, ref)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(
		attribute.String("rtmanager.image.ref", ref),
		attribute.Bool("rtmanager.image.pulled", img.Pull.Pulled),
	)
	if img.Pull.Pulled {
		span.SetAttributes(
			attribute.Int64("rtmanager.image.pull.bytes", img.Pull.Bytes),
			attribute.Float64("rtmanager.image.pull.duration_s", img.Pull.Duration.Seconds()),
			attribute.Bool("rtmanager.image.pull.shared", img.Pull.Shared),
			attribute.Int("rtmanager.image.pull.attempts", img.Pull.Attempts),
		)
	}
	if img.Digest != "" {
		span.SetAttributes(attribute.String("rtmanager.image.digest", img.Digest))
	}
	if err != nil {
		return engine.Image{}, fmt.Errorf("ensure image %s is present (pull): %w", ref, engineErr(err))
	}
	return img, nil
}
