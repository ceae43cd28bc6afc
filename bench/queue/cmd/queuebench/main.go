// Command queuebench measures rtmanager's job queue and River side by side
// on one PostgreSQL server (package queuebench) and prints a Markdown
// report, also written to -out. `make bench-river` runs it.
//
// Without -database-url it starts a throwaway cluster (queuebench.StartServer:
// the test suite's settings, pg_stat_statements loaded) and connects over
// TCP on loopback (-socket: over its Unix socket).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/bench/queue/queuebench"
)

func main() {
	var o queuebench.Options
	var sizes, out string
	var socket bool
	var cpuProfile, oursSQL string
	settings := map[string]string{}
	flag.StringVar(&o.AdminURL, "database-url", "", "an existing server's maintenance database (its user needs CREATEDB); empty: a throwaway cluster")
	flag.BoolVar(&socket, "socket", false, "connect to the throwaway cluster over its Unix socket instead of TCP on loopback")
	flag.Func("set", "extra server setting name=value for the throwaway cluster (repeatable), e.g. -set fsync=on", func(s string) error {
		name, value, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return fmt.Errorf("%q is not name=value", s)
		}
		settings[name] = value
		return nil
	})
	flag.StringVar(&sizes, "sizes", "5000,50000,200000", "comma-separated backlog sizes, one row each")
	flag.IntVar(&o.Rounds, "rounds", 3, "rounds per size and side, alternating")
	flag.IntVar(&o.Concurrency, "concurrency", 8, "our worker's concurrency (RTM_CONCURRENCY)")
	flag.IntVar(&o.Prefetch, "prefetch", 0, "our worker's Prefetch: jobs claimed beyond the free slots into its local buffer (agent default 0)")
	flag.IntVar(&o.PoolSize, "pool", 0, "both sides' pool size; 0: each side's own default")
	flag.IntVar(&o.RiverMaxWorkers, "river-workers", 2000, "River's MaxWorkers (river bench: 2,000)")
	flag.DurationVar(&o.RiverFetchCooldown, "river-fetch-cooldown", 2*time.Millisecond, "River's FetchCooldown (river bench: 2ms)")
	flag.DurationVar(&o.RiverFetchPollInterval, "river-fetch-poll", 20*time.Millisecond, "River's FetchPollInterval (river bench: 20ms)")
	flag.IntVar(&o.RawCommits, "raw-commits", 3000, "one-row commits of the commit baseline")
	flag.IntVar(&o.RawClaimJobs, "raw-claim-jobs", 20000, "backlog of the raw claim + update baseline")
	flag.DurationVar(&o.Alongside, "alongside", 5*time.Second, "how long each side works with inserts alongside, per round; 0: skip")
	flag.IntVar(&o.AlongsideMin, "alongside-min", 20000, "jobs the inserter keeps queued while working alongside")
	flag.BoolVar(&o.Growth, "growth", true, "run the growth rows (finished jobs, many games, hot game)")
	flag.IntVar(&o.GrowthBacklog, "growth-backlog", 20000, "queued backlog of the finished-jobs and games rows")
	flag.IntVar(&o.Finished, "finished", 1_000_000, "finished jobs in the table for the finished-jobs row")
	flag.IntVar(&o.ManyGames, "many-games", 10000, "games of the games row")
	flag.IntVar(&o.HotJobs, "hot-jobs", 10000, "queued jobs of the hot game")
	flag.IntVar(&o.OtherGames, "other-games", 100, "games behind the hot game")
	flag.IntVar(&o.OtherJobsPerGame, "other-jobs", 100, "jobs per other game (their throughput backlog)")
	flag.IntVar(&o.PickupJobs, "pickup-jobs", 1000, "other games' jobs inserted at -other-rate while their pickup latency is measured")
	flag.Float64Var(&o.OtherRate, "other-rate", 500, "insert rate of the other games' jobs while their pickup latency is measured")
	flag.StringVar(&out, "out", "bench-river.out", "file the report is also written to; empty: none")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write this process's CPU profile (both sides' Go code, not the server's) to this file")
	flag.StringVar(&oursSQL, "ours-sql", "", "a file of SQL run on our database after its migrations: a schema variant priced beside the shipped one (see variants/)")
	flag.Parse()
	if oursSQL != "" {
		b, err := os.ReadFile(oursSQL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "queuebench: -ours-sql:", err)
			os.Exit(2)
		}
		o.OursSQL, o.OursSQLName = string(b), filepath.Base(oursSQL)
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "queuebench: -sizes: %q is not a job count\n", s)
			os.Exit(2)
		}
		o.Sizes = append(o.Sizes, n)
	}
	o.Progress = os.Stderr
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "queuebench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, socket, settings, out); err != nil {
		fmt.Fprintln(os.Stderr, "queuebench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, o queuebench.Options, socket bool, extra map[string]string, out string) error {
	if o.AdminURL == "" {
		fmt.Fprintln(os.Stderr, "starting a throwaway PostgreSQL cluster")
		srv, err := queuebench.StartServer(ctx, !socket, extra)
		if err != nil {
			return err
		}
		defer srv.Stop()
		o.AdminURL = srv.AdminURL
		if o.ServerPID, err = srv.PID(); err != nil {
			return err
		}
	}
	rep, err := queuebench.Run(ctx, o)
	if err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	rep.Markdown(w)
	return nil
}
