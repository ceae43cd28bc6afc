package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/pgcluster"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

var httpAddrRE = regexp.MustCompile(`http_addr=(\S+)`)

// get fetches a path of the agent's HTTP server (on loopback).
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadinessMetricsAndDrain runs one agent process on a PostgreSQL of
// its own and checks what an operator sees: /readyz turns unready when
// PostgreSQL stops, saying so, and ready when it returns; /metrics parses
// as Prometheus text and counts a job; and a SIGTERM during a long stop job
// leaves the job finished or given back, never running, and exits 0.
func TestReadinessMetricsAndDrain(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "rtm-app-ops-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := pgcluster.Options{DataDir: dir, Settings: map[string]string{"fsync": "off"}}
	cluster, err := pgcluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })

	e := newEnv(t, cluster.URL("postgres"))
	e.vars["RTM_DRAIN_TIMEOUT"] = "2s"
	a := e.start("a")
	var addr string
	wait.For(t, time.Minute, "the agent's HTTP address in its log", func() bool {
		m := httpAddrRE.FindStringSubmatch(a.log())
		if m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	wait.For(t, time.Minute, "/readyz to answer 200", func() bool {
		code, _ := get(t, addr, "/readyz")
		return code == http.StatusOK
	})

	// A job the agent refuses at once still counts as claimed and failed.
	bad := e.enqueue("g-bad", job.Kind("frobnicate"), `{}`)
	wait.For(t, time.Minute, "the unknown-kind job to fail", func() bool {
		j, err := e.store.GetJob(context.Background(), bad)
		return err == nil && j.Status == job.StatusFailed
	})
	wait.For(t, 30*time.Second, "the job in /metrics", func() bool {
		return metricSum(t, addr, "rtmanager_worker_jobs_claimed_total", nil) >= 1 &&
			metricSum(t, addr, "rtmanager_worker_jobs_outcome_total", map[string]string{"outcome": "failed"}) >= 1
	})

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	var body string
	wait.For(t, time.Minute, "/readyz to turn unready without PostgreSQL", func() bool {
		var code int
		code, body = get(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "FAIL database") {
		t.Fatalf("/readyz does not say what is wrong:\n%s", body)
	}
	if cluster, err = pgcluster.Start(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	e.store.Pool().Reset() // the test's own connections died with the server
	wait.For(t, time.Minute, "/readyz to be ready again", func() bool {
		code, _ := get(t, addr, "/readyz")
		return code == http.StatusOK
	})

	// A container that ignores SIGTERM, and a stop job that will wait 60 s
	// for it: SIGTERM the agent meanwhile.
	start := e.enqueue("g-slow", job.KindStart, fmt.Sprintf(`{"image_ref": %q, "env": {"ENGINE_IGNORE_SIGTERM": "1"}}`, e.image))
	e.waitJob(start, 2*time.Minute)
	e.waitRecord("g-slow", runtime.StatusRunning, time.Minute)
	stop := e.enqueue("g-slow", job.KindStop, `{"timeout_seconds": 60}`)
	wait.For(t, time.Minute, "the stop job to run", func() bool {
		j, err := e.store.GetJob(context.Background(), stop)
		return err == nil && j.Status == job.StatusRunning
	})
	a.signal(syscall.SIGTERM)
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the agent exited %d on SIGTERM, want 0; log:\n%s", code, a.log())
	}
	j, err := e.store.GetJob(context.Background(), stop)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the drain the stop job is %s (attempt %d)", j.Status, j.Attempt)
	if j.Status == job.StatusRunning || (j.Status != job.StatusSucceeded && j.Status != job.StatusQueued) {
		t.Fatalf("after the drain the stop job is %s (lease owner %q), want succeeded or queued again", j.Status, j.LeaseOwner)
	}
	if j.Status == job.StatusQueued && j.LeaseOwner != "" {
		t.Fatalf("the released job still names a lease owner: %+v", j)
	}
}

// metricSum adds up the samples of a metric family whose labels include
// want.
func metricSum(t *testing.T, addr, name string, want map[string]string) float64 {
	t.Helper()
	code, body := get(t, addr, "/metrics")
	if code != http.StatusOK {
		return 0
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if match {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestRestartAfterCrashTakesOverAtOnce: an agent killed with SIGKILL in
// the middle of a job and started again on the same machine does not wait
// for its dead predecessor's host lease, nor for the job's lease, to
// expire: it sees that process is gone, takes the host lease over while it
// is still valid, gives the dead agent's running job back to the queue at
// once, and runs it.
func TestRestartAfterCrashTakesOverAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, pgtest.URL(t))
	e.vars["RTM_HOST_LEASE_TTL"] = "60s"
	e.vars["RTM_HOST_LEASE_POLL"] = "250ms"
	e.vars["RTM_LEASE_DURATION"] = "60s"
	a := e.start("a")
	wait.For(t, time.Minute, "agent a active", func() bool { return strings.HasPrefix(e.holder(), a.idPrefix(e.hostID)) })
	start := e.enqueue("slow", job.KindStart, fmt.Sprintf(`{"image_ref": %q, "env": {"ENGINE_IGNORE_SIGTERM": "1"}}`, e.image))
	e.waitJob(start, 2*time.Minute)
	// A stop that takes its whole 5 s timeout: a's job when a dies.
	stop := e.enqueue("slow", job.KindStop, `{"timeout_seconds": 5}`)
	wait.For(t, time.Minute, "a to run the stop job", func() bool {
		j, err := e.store.GetJob(context.Background(), stop)
		return err == nil && j.Status == job.StatusRunning
	})
	hostLeaseEnds := e.host().LeaseExpiresAt
	running, err := e.store.GetJob(context.Background(), stop)
	if err != nil || hostLeaseEnds == nil || running.LeaseExpiresAt == nil {
		t.Fatalf("before the kill: host lease %v, job %+v, %v", hostLeaseEnds, running, err)
	}
	_ = a.cmd.Process.Kill()
	<-a.done // reaped: its pid no longer exists

	b := e.start("b")
	wait.For(t, time.Minute, "agent b active", func() bool { return strings.HasPrefix(e.holder(), b.idPrefix(e.hostID)) })
	done := e.waitJob(stop, 2*time.Minute)
	var hostLeaseValid, jobLeaseValid bool
	err = e.store.Pool().QueryRow(context.Background(), "SELECT now() < $1, now() < $2", *hostLeaseEnds, *running.LeaseExpiresAt).
		Scan(&hostLeaseValid, &jobLeaseValid)
	if err != nil {
		t.Fatal(err)
	}
	if !hostLeaseValid || !jobLeaseValid {
		t.Fatalf("b finished a's job only after a's leases expired (host lease valid %v, job lease valid %v): it waited instead of taking over",
			hostLeaseValid, jobLeaseValid)
	}
	if done.Attempt != 2 {
		t.Fatalf("the stop job ended on attempt %d, want 2 (a's, then b's)", done.Attempt)
	}
	if !strings.Contains(b.log(), "took the host lease over from a dead agent") || !strings.Contains(b.log(), "requeued_jobs=1") {
		t.Fatalf("b's log does not say it took the lease over and requeued a's job:\n%s", b.log())
	}
}
