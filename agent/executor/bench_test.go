package executor_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
)

// BenchmarkStartJob measures a start job end to end: insert → claimed →
// validated → state directory → network and image (known after the
// warm-up: no request) → create → start → start time read → record and
// outbox committed. Compare with BenchmarkRawDockerCreateStart from the
// same run, or better, BenchmarkStartJobPaired.
func BenchmarkStartJob(b *testing.B) {
	e := newEnv(b)
	w := e.benchWorker(b)
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

// BenchmarkRawDockerCreateStart is the baseline: the container a start
// job creates (rawCreateOptions, checked against the agent's by
// TestRawBaselineCreatesTheAgentsContainer), with its state directory,
// created and started with two plain SDK calls on a network that exists.
func BenchmarkRawDockerCreateStart(b *testing.B) {
	r := newRaw(b)
	b.ResetTimer()
	for i := range b.N {
		r.createStart(b, r.game(i), int64(i+1))
	}
	b.StopTimer()
}

// BenchmarkStartJobPaired runs BenchmarkStartJob's job and
// BenchmarkRawDockerCreateStart's two calls in turn, one of each per
// iteration in alternating order, so that both meet the same load on a
// shared machine; it
// reports the median of each (job-ms, raw-ms) and their ratio. ns/op is
// the pair.
func BenchmarkStartJobPaired(b *testing.B) {
	e := newEnv(b)
	w := e.benchWorker(b)
	e.succeeded(e.insert("warm", "start", startPayload(e.image)))
	r := newRaw(b)
	r.createStart(b, r.game(-1), 1)
	jobs, raws := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	job := func(i int) {
		began := time.Now()
		want := w.Stats().Succeeded + 1
		e.insert(fmt.Sprintf("b%d", i), "start", startPayload(e.image))
		for w.Stats().Succeeded < want {
			time.Sleep(200 * time.Microsecond) // benchmark polling
		}
		jobs = append(jobs, time.Since(began))
	}
	raw := func(i int) {
		began := time.Now()
		r.createStart(b, r.game(i), int64(i+2))
		raws = append(raws, time.Since(began))
	}
	for i := range b.N {
		// Each goes first every other time: the second of a pair meets
		// the daemon still busy with the first.
		if i%2 == 0 {
			job(i)
			raw(i)
		} else {
			raw(i)
			job(i)
		}
	}
	b.StopTimer()
	mj, mr := median(jobs), median(raws)
	b.ReportMetric(float64(mj.Microseconds())/1000, "job-ms")
	b.ReportMetric(float64(mr.Microseconds())/1000, "raw-ms")
	b.ReportMetric(float64(mj)/float64(mr), "job/raw")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// raw creates engine containers with plain SDK calls, as the agent
// creates them, for a host id, network and state root of its own.
type raw struct {
	cli     *client.Client
	image   string
	hostID  string
	network string
	root    string
}

func newRaw(t testing.TB) *raw {
	t.Helper()
	r := &raw{cli: dockertest.Client(t), image: dockertest.EngineImage(t), hostID: dockertest.UniqueName(t), root: t.TempDir()}
	r.network = "net-" + r.hostID
	dockertest.RemoveLabelled(t, engine.LabelHost, r.hostID)
	_, err := r.cli.NetworkCreate(context.Background(), r.network, client.NetworkCreateOptions{
		Driver: "bridge",
		Labels: map[string]string{engine.LabelManaged: "true", engine.LabelHost: r.hostID},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// game returns the i-th game id of r: container names are the daemon's,
// so they carry r's host id.
func (r *raw) game(i int) string { return fmt.Sprintf("raw%d-%s", i, r.hostID) }

// createStart makes the game's state directory, then creates and starts
// its container; it returns the container id.
func (r *raw) createStart(t testing.TB, game string, jobID int64) string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(r.root, game)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	res, err := r.cli.ContainerCreate(ctx, rawCreateOptions(r.image, r.hostID, r.network, game, dir, jobID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// rawCreateOptions is the create request of a start job's container
// (startPayload's env and limits with the test policy's defaults),
// written out with the SDK's types.
func rawCreateOptions(image, hostID, netName, game, stateDir string, jobID int64) client.ContainerCreateOptions {
	name := runtime.ContainerName(game)
	return client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image: image,
			Env:   []string{"GAME_ID=x"},
			Labels: map[string]string{
				engine.LabelManaged: "true",
				engine.LabelHost:    hostID,
				engine.LabelGame:    game,
				engine.LabelJob:     strconv.FormatInt(jobID, 10),
			},
		},
		HostConfig: &container.HostConfig{
			Mounts:        []mount.Mount{{Type: mount.TypeBind, Source: stateDir, Target: engine.DefaultStateMountTarget}},
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
			IpcMode:       "private",
			CapDrop:       []string{"ALL"},
			SecurityOpt:   []string{"no-new-privileges"},
			Init:          ptr(true),
			NetworkMode:   container.NetworkMode(netName),
			Resources: container.Resources{
				Memory:     64 << 20,
				MemorySwap: 64 << 20,
				NanoCPUs:   job.DefaultNanoCPUs,
				PidsLimit:  ptr(int64(64)),
			},
		},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			netName: {Aliases: []string{name}},
		}},
	}
}

func ptr[T any](v T) *T { return &v }

// BenchmarkColdPullStart measures a start job whose image is not on the
// host: the pull from the loopback registry, then the job as in
// BenchmarkStartJob (sub-benchmark job), against the same work done with
// plain SDK calls, docker pull + create + start (sub-benchmark raw), in
// the same run. Every iteration pushes an image of its own (an engine
// variant with 4 MiB of random padding: no layer is shared) and removes
// it locally, outside the timer.
func BenchmarkColdPullStart(b *testing.B) {
	r := registry.Start(b, registry.Options{})
	cli := dockertest.Client(b)
	// coldImage returns the reference of an image only the registry has.
	n := 0
	coldImage := func(b *testing.B) string {
		n++
		src := fmt.Sprintf("rtmanager-test-cold:%s-%d", dockertest.UniqueName(b), n)
		id := dockertest.EngineImageVariantPadded(b, src, 4<<20)
		ref, _ := r.Push(b, cli, src, fmt.Sprintf("galaxy/cold:%d", n))
		if _, err := cli.ImageRemove(context.Background(), id, client.ImageRemoveOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
		return ref
	}

	b.Run("job", func(b *testing.B) {
		e := newEnv(b)
		e.policy.AllowedImages = append(e.policy.AllowedImages, r.Host+"/galaxy/*")
		cfg := e.workerConfig("owner-bench")
		cfg.Logger = slog.New(slog.DiscardHandler)
		w := worker.New(e.store, e.executor(), cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		defer func() { cancel(); <-done }()
		e.succeeded(e.insert("warm", "start", startPayload(e.image))) // the network exists
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			ref := coldImage(b)
			want := w.Stats().Succeeded + 1
			b.StartTimer()
			e.insert(fmt.Sprintf("cold%d", i), "start", startPayload(ref))
			for w.Stats().Succeeded < want {
				time.Sleep(200 * time.Microsecond) // benchmark polling
			}
		}
		b.StopTimer()
	})
	b.Run("raw", func(b *testing.B) {
		label := dockertest.UniqueName(b)
		dockertest.RemoveLabelled(b, dockertest.LabelTest, label)
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			ref := coldImage(b)
			b.StartTimer()
			resp, err := cli.ImagePull(ctx, ref, client.ImagePullOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := resp.Wait(ctx); err != nil {
				b.Fatal(err)
			}
			res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
				Name:       fmt.Sprintf("raw-%s-%d", label, i),
				Config:     &container.Config{Image: ref, Labels: map[string]string{dockertest.LabelTest: label}},
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
	})
}

// benchWorker runs a quiet worker on e's executor until the benchmark
// ends.
func (e *env) benchWorker(b *testing.B) *worker.Worker {
	cfg := e.workerConfig("owner-bench")
	cfg.Logger = slog.New(slog.DiscardHandler)
	w := worker.New(e.store, e.executor(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return w
}
