package queuebench_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/bench/queue/queuebench"
)

// TestTinyRun runs the whole harness at a tiny size on a throwaway
// cluster, so that it cannot rot: every row is filled in from real runs of
// both queues (Run itself checks that every job was done, and ours each
// with its outcome event), the claims are explained, and the statements
// are counted. The figures belong to `make bench-river`.
func TestTinyRun(t *testing.T) {
	ctx := context.Background()
	srv, err := queuebench.StartServer(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	pid, err := srv.PID()
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	rep, err := queuebench.Run(ctx, queuebench.Options{
		AdminURL: srv.AdminURL, ServerPID: pid, Sizes: []int{200, 300}, Rounds: 2,
		RawCommits: 50, RawClaimJobs: 100,
		Alongside: time.Second, AlongsideMin: 200,
		Growth: true, GrowthBacklog: 150, Finished: 1000, ManyGames: 40,
		HotJobs: 200, OtherGames: 4, OtherJobsPerGame: 3, PickupJobs: 40, OtherRate: 1000,
		Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	if !rep.PSS {
		t.Fatal("pg_stat_statements is loaded on the server but was not found")
	}
	// The server's CPU time is counted in clock ticks (10 ms): a tiny
	// round may see none, but the run as a whole must.
	var serverCPU time.Duration
	checkMeasure := func(what string, m queuebench.Measure, jobs int) {
		t.Helper()
		if m.Jobs != jobs || m.PerSec() <= 0 || m.Cost.Statements <= 0 || m.Cost.WALBytes <= 0 || m.Cost.ServerCPU < 0 || m.Cost.ClientCPU <= 0 {
			t.Errorf("%s: %+v, want %d jobs, a rate, statements, WAL and both CPU times", what, m, jobs)
		}
		serverCPU += m.Cost.ServerCPU
	}
	if len(rep.Sizes) != 2 {
		t.Fatalf("%d size rows, want 2", len(rep.Sizes))
	}
	for _, row := range rep.Sizes {
		if len(row.River) != 2 || len(row.Ours) != 2 {
			t.Fatalf("backlog %d: %d River and %d ours rounds, want 2 each", row.Jobs, len(row.River), len(row.Ours))
		}
		for i := range 2 {
			checkMeasure("River", row.River[i], row.Jobs)
			checkMeasure("ours", row.Ours[i], row.Jobs)
		}
		if !strings.Contains(row.Claim.Custom, "Execution Time") || !strings.Contains(row.Claim.Generic, "Execution Time") ||
			!strings.Contains(row.Claim.Custom, "jobs") {
			t.Errorf("backlog %d: our claim was not explained:\n%s", row.Jobs, row.Claim.Custom)
		}
		if !strings.Contains(row.ClaimMid.Custom, "Execution Time") || !strings.Contains(row.RiverFetchMid.Custom, "Execution Time") {
			t.Errorf("backlog %d: the claims were not explained half-way", row.Jobs)
		}
		if !strings.Contains(row.RiverFetch.Custom, "river_job") {
			t.Errorf("backlog %d: River's fetch was not explained:\n%s", row.Jobs, row.RiverFetch.Custom)
		}
	}
	// The statements counted are the queue's: ours claims and finishes.
	var top []string
	for _, s := range rep.Sizes[1].Ours[0].Cost.Top {
		top = append(top, s.Query)
	}
	if all := strings.Join(top, "\n"); !strings.Contains(all, "ClaimJobs") || !strings.Contains(all, "FinishJobs") {
		t.Errorf("our top statements lack the claim or the finish:\n%s", all)
	}
	if len(rep.Raw) != 2 || rep.Raw[0].CommitsPerSec <= 0 || rep.Raw[0].ClaimUpdatePerSec <= 0 {
		t.Errorf("raw baselines: %+v", rep.Raw)
	}
	if len(rep.Alongside.River) != 2 || len(rep.Alongside.Ours) != 2 ||
		rep.Alongside.River[0].Jobs <= 0 || rep.Alongside.Ours[0].Jobs <= 0 {
		t.Errorf("alongside: %+v", rep.Alongside)
	}
	rows := map[string]queuebench.GrowthRow{}
	for _, g := range rep.Growth {
		rows[g.Name+"/"+g.Side] = g
		if g.ClaimBase.Custom == "" || g.ClaimGrow.Custom == "" {
			t.Errorf("growth %s/%s: claim not explained", g.Name, g.Side)
		}
	}
	for _, name := range []string{"finished/River", "finished/ours", "games/ours", "hot/ours"} {
		g, ok := rows[name]
		if !ok {
			t.Errorf("growth row %s missing", name)
			continue
		}
		jobs := 150
		if name == "hot/ours" {
			jobs = 12
		}
		checkMeasure(name+" base", g.Base, jobs)
		checkMeasure(name+" grown", g.Grow, jobs)
		if name == "hot/ours" {
			checkMeasure(name+" short queue", g.Short, jobs)
		}
	}
	if serverCPU <= 0 {
		t.Error("the server's CPU time was measured in no round")
	}
	if hot := rows["hot/ours"]; hot.PickupGrow[0] <= 0 || hot.PickupGrow[1] < hot.PickupGrow[0] || hot.PickupBase[1] < hot.PickupBase[0] {
		t.Errorf("hot game pickup: base %v, grown %v", hot.PickupBase, hot.PickupGrow)
	}
	// The short-queue rounds give the hot game the same work: it runs
	// jobs in both while the pickup latency is measured.
	if hot := rows["hot/ours"]; hot.PickupShort[0] <= 0 || hot.PickupShort[1] < hot.PickupShort[0] || hot.HotRate[0] <= 0 || hot.HotRate[1] <= 0 {
		t.Errorf("hot game, short queue: pickup %v, the hot game's rates %v", hot.PickupShort, hot.HotRate)
	}
	// The hot row alternates rounds of base, grown and short queue and
	// reports the median (of two, the slower).
	if hot := rows["hot/ours"]; len(hot.BaseRounds) != 2 || len(hot.GrowRounds) != 2 || len(hot.ShortRounds) != 2 {
		t.Errorf("hot game rounds: %d base, %d grown, %d short queue; want 2 each", len(hot.BaseRounds), len(hot.GrowRounds), len(hot.ShortRounds))
	} else if lo := min(hot.GrowRounds[0].PerSec(), hot.GrowRounds[1].PerSec()); hot.Grow.PerSec() != lo {
		t.Errorf("hot game grown: %.0f jobs/s reported, rounds %.0f and %.0f", hot.Grow.PerSec(), hot.GrowRounds[0].PerSec(), hot.GrowRounds[1].PerSec())
	}
	// The claim reads the heads only (migration 000010), each checked for
	// an earlier unfinished job of its game (the guard's SubPlan).
	if hot := rows["hot/ours"]; !strings.Contains(hot.ClaimGrow.Custom, "jobs_head_idx") || !strings.Contains(hot.ClaimGrow.Custom, "SubPlan") {
		t.Errorf("hot game claim plan without the heads' index or the per-game check:\n%s", hot.ClaimGrow.Custom)
	}

	var md bytes.Buffer
	rep.Markdown(&md)
	for _, want := range []string{"| 200 |", "| 300 |", "ours/River", "server CPU µs/job", "backlog 200 → 300", "finished jobs in the table", "hot game", "The hot-game row's throughput phase", "### EXPLAIN (ANALYZE, BUFFERS)", "What each side's no-op job includes", "-- name: ClaimJobs"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

// TestVariants runs each schema variant of variants/ (priced beside the
// shipped schema, see their headers) through a tiny run, so that they
// keep applying over the migrations and their figures stay reproducible:
// Run checks that every job was done, ours each with its outcome event,
// and the report must say that ours ran a variant.
func TestVariants(t *testing.T) {
	files, err := filepath.Glob("../variants/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no variants found: %v", err)
	}
	ctx := context.Background()
	srv, err := queuebench.StartServer(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sql, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var progress bytes.Buffer
			rep, err := queuebench.Run(ctx, queuebench.Options{
				AdminURL: srv.AdminURL, Sizes: []int{300}, Rounds: 1, Concurrency: 50,
				RawCommits: 10, RawClaimJobs: 10,
				OursSQL: string(sql), OursSQLName: filepath.Base(f),
				Progress: &progress,
			})
			if err != nil {
				t.Fatalf("%v\nprogress:\n%s", err, progress.String())
			}
			if got := rep.Sizes[0].Ours[0].Jobs; got != 300 {
				t.Fatalf("ours did %d jobs, want 300", got)
			}
			var md bytes.Buffer
			rep.Markdown(&md)
			if want := "ours runs a schema variant, not the shipped schema:** " + filepath.Base(f); !strings.Contains(md.String(), want) {
				t.Errorf("report lacks %q", want)
			}
		})
	}
}
