// Package pgtrace records the statements a pgx connection sends, with
// their arguments, so that a test or a benchmark can EXPLAIN exactly what
// the code under measure ran rather than a copy of it.
package pgtrace

import (
	"context"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Statement is one statement as it was sent.
type Statement struct {
	SQL  string
	Args []any
}

// Recorder is a pgx.QueryTracer (set it as ConnConfig.Tracer) that keeps
// the statements sent while Record runs.
type Recorder struct {
	mu    sync.Mutex
	on    bool
	stmts []Statement
}

// TraceQueryStart implements pgx.QueryTracer.
func (r *Recorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.stmts = append(r.stmts, Statement{SQL: d.SQL, Args: append([]any(nil), d.Args...)})
	}
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (r *Recorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Record runs f and returns the statements sent meanwhile, in order.
func (r *Recorder) Record(f func() error) ([]Statement, error) {
	r.mu.Lock()
	r.on, r.stmts = true, nil
	r.mu.Unlock()
	err := f()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.stmts, err
}

// Last returns the last of stmts whose text contains marker.
func Last(stmts []Statement, marker string) (Statement, bool) {
	for i := len(stmts) - 1; i >= 0; i-- {
		if strings.Contains(stmts[i].SQL, marker) {
			return stmts[i], true
		}
	}
	return Statement{}, false
}
