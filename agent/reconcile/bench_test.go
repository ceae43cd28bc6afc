package reconcile_test

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// BenchmarkPass measures a reconcile pass over 1,000 labelled containers
// (created, not started: cheap, and a pass lists and inspects them all the
// same) bound to 1,000 running records — the steady state, nothing to
// repair — against the raw cost of listing and inspecting them
// (engine.ListManaged) in the same run.
func BenchmarkPass(b *testing.B) {
	const n = 1000
	e := newEnv(b)
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			gm := e.create(fmt.Sprintf("bench%04d", i))
			e.record(gm, runtime.StatusRunning)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	r := e.reconciler(-1)
	var raw, pass time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		cs, err := e.eng.ListManaged(e.ctx)
		if err != nil || len(cs) != n {
			b.Fatalf("ListManaged: %d, %v", len(cs), err)
		}
		raw += time.Since(t)

		t = time.Now()
		rep, err := r.Pass(e.ctx, "bench")
		if err != nil || rep.Containers != n || rep.Records != n || rep.Repairs() != 0 || rep.Orphans != 0 {
			b.Fatalf("Pass: %+v, %v", rep, err)
		}
		pass += time.Since(t)
	}
	b.StopTimer()
	b.ReportMetric(float64(raw.Milliseconds())/float64(b.N), "raw-list-inspect-ms")
	b.ReportMetric(float64(pass.Milliseconds())/float64(b.N), "pass-ms")
	b.ReportMetric(float64(pass)/float64(raw), "pass/raw")
}
