package executor_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// The crash test re-executes the test binary as an agent process, told so
// by these variables.
const (
	childEnv     = "RTM_EXECUTOR_TEST_CHILD"
	childDB      = "RTM_EXECUTOR_TEST_DB"
	childHost    = "RTM_EXECUTOR_TEST_HOST"
	childRoot    = "RTM_EXECUTOR_TEST_ROOT"
	childNetwork = "RTM_EXECUTOR_TEST_NETWORK"
	childImage   = "RTM_EXECUTOR_TEST_IMAGE"
)

// runChild is the agent process of the crash test: a worker with the real
// executor whose start jobs hang after the container has been created and
// started, before the outcome is written — where the parent kills it.
func runChild() int {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pool, err := db.Connect(ctx, os.Getenv(childDB), nil)
	if err != nil {
		log.Error("connect", "err", err)
		return 2
	}
	store := db.NewStore(pool, nil)
	eng, err := engine.New(engine.Options{HostID: os.Getenv(childHost)})
	if err != nil {
		log.Error("engine", "err", err)
		return 2
	}
	policy := job.DefaultPolicy()
	policy.StateRoot = os.Getenv(childRoot)
	policy.AllowedImages = []string{os.Getenv(childImage)}
	real := executor.New(eng, executor.Config{Records: store, StateRoot: policy.StateRoot, Logger: log})
	hang := worker.ExecutorFunc(func(ctx context.Context, t worker.Task) (worker.Result, error) {
		_, err := real.Execute(ctx, t)
		log.Info("start executed; hanging until killed", "job_id", t.Job.ID, "err", err)
		select {}
	})
	w := worker.New(store, hang, worker.Config{
		HostID: os.Getenv(childHost), Owner: fmt.Sprintf("child-%d", os.Getpid()), Concurrency: 1,
		LeaseDuration: time.Second, LeaseRenewInterval: 200 * time.Millisecond, PollInterval: 100 * time.Millisecond,
		UseListen: true, Policy: policy, Network: os.Getenv(childNetwork), Logger: log,
	})
	if err := w.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 2
	}
	return 0
}

// TestStartSurvivesAgentKilledMidJob kills an agent with SIGKILL while a
// start job runs (its container already exists) and checks that a new
// agent for the host completes the job once, adopting that container.
func TestStartSurvivesAgentKilledMidJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const g = "crash"
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childDB+"="+e.dbURL, childHost+"="+e.hostID,
		childRoot+"="+e.root, childNetwork+"="+e.network, childImage+"="+e.image)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	id := e.insert(g, "start", startPayload(e.image))
	wait.For(t, 2*time.Minute, "the child's container to run", func() bool {
		cs := e.containers(g)
		return len(cs) == 1 && cs[0].Running
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true
	first := e.containers(g)[0].ID
	if j, _ := e.store.GetJob(context.Background(), id); j.Status != job.StatusRunning || j.Attempt != 1 {
		t.Fatalf("job after the kill: %+v; want running (attempt 1) under the dead agent's lease", j)
	}

	// The restarted agent.
	cfg := e.workerConfig("owner-restarted")
	cfg.LeaseDuration, cfg.LeaseRenewInterval, cfg.RescueInterval = time.Second, 200*time.Millisecond, 200*time.Millisecond
	w := worker.New(e.store, e.executor(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	j := e.succeeded(id)
	// The worker counts a success after its commit returns, a moment after
	// the job reads as succeeded.
	wait.For(t, 30*time.Second, "the worker to count the success", func() bool { return w.Stats().Succeeded == 1 })
	if j.Attempt != 2 || w.Stats().Requeued != 1 || w.Stats().Succeeded != 1 {
		t.Fatalf("job %+v, stats %+v: want the job requeued once and completed by the new agent", j, w.Stats())
	}
	cs := e.containers(g)
	rec := e.record(g)
	if len(cs) != 1 || cs[0].ID != first || !cs[0].Running || rec.CurrentContainerID != first {
		t.Fatalf("containers %+v, record %+v: want exactly the container the killed agent created", cs, rec)
	}
	var succeeded int
	if err := e.store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE job_id = $1 AND type = 'job.succeeded'`, id).Scan(&succeeded); err != nil || succeeded != 1 {
		t.Fatalf("%d job_succeeded events (%v), want 1", succeeded, err)
	}
}
