package executor_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// BenchmarkStartJob measures a start job end to end: insert → claimed →
// validated → state directory → network and image checks → create → start
// → record and outbox committed. Compare with BenchmarkRawDockerCreateStart
// from the same run.
func BenchmarkStartJob(b *testing.B) {
	e := newEnv(b)
	cfg := e.workerConfig("owner-bench")
	cfg.Logger = slog.New(slog.DiscardHandler)
	w := worker.New(e.store, e.executor(), e.intents, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Warm up: the network exists and the image is present afterwards.
	e.succeeded(e.insert("warm", "start", startPayload(e.image)))
	b.ResetTimer()
	for i := range b.N {
		want := w.Stats().Succeeded + 1
		e.insert(fmt.Sprintf("b%d", i), "start", startPayload(e.image))
		for w.Stats().Succeeded < want {
			time.Sleep(200 * time.Microsecond) // benchmark polling
		}
	}
	b.StopTimer()
}

// BenchmarkRawDockerCreateStart is the baseline: the same image, created
// and started with two plain SDK calls.
func BenchmarkRawDockerCreateStart(b *testing.B) {
	cli := dockertest.Client(b)
	image := dockertest.EngineImage(b)
	label := dockertest.UniqueName(b)
	dockertest.RemoveLabelled(b, dockertest.LabelTest, label)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name:       fmt.Sprintf("raw-%s-%d", label, i),
			Config:     &container.Config{Image: image, Labels: map[string]string{dockertest.LabelTest: label}},
			HostConfig: &container.HostConfig{CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"}},
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}
