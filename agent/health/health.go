// Package health serves the agent's HTTP endpoints: /healthz (the process
// is alive), /readyz (it can do its work, with a body that says what is
// wrong when not) and /metrics (Prometheus text).
package health

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Check is one readiness condition. Func returns nil when it holds, or an
// error that tells an operator what is wrong.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// CheckTimeout bounds each readiness check, so that a hung database makes
// /readyz answer "not ready" rather than not answer.
const CheckTimeout = 2 * time.Second

// Handler returns the agent's HTTP handler. metrics may be nil.
func Handler(checks []Check, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		results := Run(r.Context(), checks)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ready := true
		var body strings.Builder
		for _, res := range results {
			if res.Err != nil {
				ready = false
				fmt.Fprintf(&body, "FAIL %s: %v\n", res.Name, res.Err)
			} else {
				fmt.Fprintf(&body, "ok   %s\n", res.Name)
			}
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, body.String())
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

// Result is the outcome of one check.
type Result struct {
	Name string
	Err  error
}

// Run runs the checks concurrently, each bounded by CheckTimeout, and
// returns their results in the order given.
func Run(ctx context.Context, checks []Check) []Result {
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			results[i] = Result{Name: c.Name, Err: c.Func(cctx)}
		}()
	}
	wg.Wait()
	return results
}
