package worker_test

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/metrictest"
)

// TestMetricsCountJobsByKind: the claims are counted once per kind and
// claim, yet add up to the jobs of each kind, and every outcome is
// counted. Not parallel: the meter provider is the process's.
func TestMetricsCountJobsByKind(t *testing.T) {
	reader := metrictest.Install(t)
	s := newStore(t)
	var ids []int64
	for i, kind := range []string{"stop", "remove", "stop", "stop", "remove"} {
		ids = append(ids, insert(t, s, "g-metrics-"+string(rune('a'+i)), kind, `{}`, 0))
	}
	w := worker.New(s, worker.Noop, testConfig("owner-1"))
	stop := startWorker(t, w)
	for _, id := range ids {
		waitStatus(t, s, id, job.StatusSucceeded)
	}
	stop()

	sums := metrictest.Int64Points(t, reader, func(name string, attrs attribute.Set) string {
		kind, _ := attrs.Value("kind")
		outcome, _ := attrs.Value("outcome")
		return name + " " + kind.AsString() + " " + outcome.AsString()
	})
	want := map[string]int64{
		"rtmanager.worker.jobs.claimed stop ":            3,
		"rtmanager.worker.jobs.claimed remove ":          2,
		"rtmanager.worker.jobs.outcome stop succeeded":   3,
		"rtmanager.worker.jobs.outcome remove succeeded": 2,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
}
