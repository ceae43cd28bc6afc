// Command loadsim runs the fleet load simulation (package loadsim) on a
// throwaway PostgreSQL cluster with pg_stat_statements loaded, once per
// host count, and prints one line per run. `make bench-fleet` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/agent/leader"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/loadsim"
	"github.com/galaxy/rtmanager/internal/pgcluster"
)

func main() {
	hosts := flag.String("hosts", "1,100,1000", "comma-separated simulated host counts, one run each")
	jobs := flag.Int("jobs", 3000, "jobs the Game Master simulator inserts per run")
	rate := flag.Float64("rate", 300, "jobs inserted per second")
	idle := flag.Duration("idle", time.Minute, "how long the idle cost is measured (at least the longest period below, so that every periodic statement is counted)")
	ttl := flag.Duration("host-lease-ttl", leader.DefaultTTL, "RTM_HOST_LEASE_TTL of the simulated agents")
	poll := flag.Duration("listen-poll-interval", time.Minute, "RTM_LISTEN_POLL_INTERVAL of the simulated agents")
	leaseDur := flag.Duration("lease-duration", 30*time.Second, "RTM_LEASE_DURATION (job lease, and rescue period) of the simulated agents")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *hosts, *jobs, *rate, *idle, *ttl, *poll, *leaseDur); err != nil {
		fmt.Fprintln(os.Stderr, "loadsim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, hostList string, jobs int, rate float64, idle, ttl, poll, leaseDur time.Duration) error {
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"shared_preload_libraries": "pg_stat_statements",
		"max_connections":          "100",
		"fsync":                    "off",
		"synchronous_commit":       "off",
	}})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	fmt.Printf("fleet load simulation: one process, one shared LISTEN connection, worker.Noop; host lease ttl %s, listen poll %s, job lease %s; %d jobs at %.0f/s\n",
		ttl, poll, leaseDur, jobs, rate)
	for i, part := range strings.Split(hostList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return fmt.Errorf("-hosts: %q is not a host count", part)
		}
		name := fmt.Sprintf("sim%d", i)
		if err := exec(ctx, cluster.URL("postgres"), "CREATE DATABASE "+name); err != nil {
			return err
		}
		url := cluster.URL(name)
		if err := db.MigrateUp(ctx, url, db.MigrateOptions{}); err != nil {
			return err
		}
		if err := exec(ctx, url, "CREATE EXTENSION pg_stat_statements"); err != nil {
			return err
		}
		rep, err := loadsim.Run(ctx, loadsim.Options{
			DatabaseURL: url, Hosts: n, Idle: idle, Jobs: jobs, Rate: rate,
			HostLeaseTTL: ttl, ListenPollInterval: poll, LeaseDuration: leaseDur,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		})
		if err != nil {
			return fmt.Errorf("%d hosts: %w", n, err)
		}
		fmt.Println(rep)
	}
	return nil
}

func exec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
