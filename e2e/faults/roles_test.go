package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/pgcluster"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/rtmclient"
)

// TestRoles applies deploy/sql/roles.sql to a test database and checks
// that the Game Master's role can do its part of the contract and nothing
// that would corrupt records, events or job states, and that an agent
// running as the agent role works.
func TestRoles(t *testing.T) {
	t.Parallel()
	dockertest.Client(t)
	psqlBin := findPsql()
	if psqlBin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no psql under CI: .ci/run installs postgresql-client")
		}
		t.Skip("no psql: install the PostgreSQL client (Debian: postgresql-client)")
	}
	dbURL := pgtest.URL(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	gm, agent := "rtm_gm_"+suffix, "rtm_agent_"+suffix
	admin, err := db.Connect(context.Background(), dbURL, nil)
	must(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, r := range []string{gm, agent} {
			var exists bool
			if admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r).Scan(&exists); !exists {
				continue
			}
			if _, err := admin.Exec(ctx, "DROP OWNED BY "+r); err != nil {
				t.Errorf("drop owned by %s: %v", r, err)
			}
			if _, err := admin.Exec(ctx, "DROP ROLE "+r); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
		admin.Close()
	})
	psql := exec.Command(psqlBin, "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-v", "gm_role="+gm, "-v", "gm_password=gm-secret", "-v", "agent_role="+agent, "-v", "agent_password=agent-secret",
		"-d", dbURL, "-f", "../../deploy/sql/roles.sql")
	for range 2 { // idempotent
		if out, err := psql.CombinedOutput(); err != nil {
			t.Fatalf("psql -f deploy/sql/roles.sql: %v\n%s", err, out)
		}
		psql = exec.Command(psql.Path, psql.Args[1:]...)
	}

	as := func(role string) string {
		u, err := url.Parse(dbURL)
		must(t, err)
		u.User = url.User(role)
		return u.String()
	}
	gmPool, err := db.Connect(context.Background(), as(gm), nil)
	must(t, err)
	t.Cleanup(gmPool.Close)

	h := newHarness(t, harnessOptions{dbURL: dbURL, env: map[string]string{"RTM_AUTO_MIGRATE": "false"}})
	h.env["RTM_DATABASE_URL"] = as(agent)
	h.pool = gmPool // the Game Master simulator runs as its role
	h.startAgent()

	ctx := context.Background()
	allowed := []struct{ what, sql string }{
		{"insert a job", `INSERT INTO jobs (host_id, game_id, kind, payload, idempotency_key, traceparent, max_attempts, run_after)
			VALUES ('elsewhere', 'roles-g', 'remove', '{}', 'k1', NULL, 0, now()) ON CONFLICT (game_id, idempotency_key) DO NOTHING RETURNING id`},
		{"ask for a cancel", `UPDATE jobs SET cancel_requested_at = now() WHERE host_id = 'elsewhere'`},
		{"read records", `SELECT * FROM runtime_records`},
		{"read the outbox", `SELECT * FROM outbox`},
		{"read hosts", `SELECT * FROM hosts`},
	}
	for _, a := range allowed {
		rows, err := gmPool.Query(ctx, a.sql)
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			t.Errorf("the Game Master role cannot %s: %v", a.what, err)
		}
	}
	denied := []struct{ what, sql string }{
		{"update a record", `UPDATE runtime_records SET status = 'removed'`},
		{"insert a record", `INSERT INTO runtime_records (game_id) VALUES ('x')`},
		{"delete outbox rows", `DELETE FROM outbox`},
		{"forge an event", `INSERT INTO outbox (type, host_id, game_id, payload) VALUES ('job.succeeded', 'h', 'g', '{}')`},
		{"set a job's status", `UPDATE jobs SET status = 'succeeded', finished_at = now()`},
		{"insert a job with a status", `INSERT INTO jobs (host_id, game_id, kind, status) VALUES ('h', 'g', 'remove', 'queued')`},
		{"insert a job with a lease", `INSERT INTO jobs (host_id, game_id, kind, lease_owner) VALUES ('h', 'g', 'remove', 'me')`},
		{"delete jobs", `DELETE FROM jobs`},
		{"take a host", `UPDATE hosts SET agent_id = 'me'`},
		{"drop a table", `DROP TABLE outbox`},
	}
	for _, d := range denied {
		_, err := gmPool.Exec(ctx, d.sql)
		if err == nil || !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("the Game Master role could %s (err %v)", d.what, err)
		}
	}

	// The contract end to end: the Game Master enqueues with rtmclient and
	// consumes the outbox; the agent, as its role, runs the job.
	gmClient := rtmclient.New(gmPool)
	var jobID int64
	must(t, func() error {
		tx, err := gmPool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		j, _, err := gmClient.Enqueue(ctx, tx, rtmclient.JobRequest{
			HostID: h.hostID, GameID: h.game("roles"), Payload: rtmclient.StartPayload{ImageRef: h.image},
		})
		if err != nil {
			return err
		}
		jobID = j.ID
		return tx.Commit(ctx)
	}())
	if !h.waitJobs(time.Minute, jobID) || h.job(jobID).Status != "succeeded" {
		t.Fatalf("the agent role could not run a job: %+v", h.job(jobID))
	}
	cons, err := gmClient.Consumer(ctx, "gm-roles", rtmclient.ConsumerOptions{})
	must(t, err)
	// The job's events become readable once no older transaction is open
	// (the watermark is the cluster's xmin, which the parallel scenarios
	// hold back now and then): poll.
	var evs []rtmclient.Event
	waitUntil(30*time.Second, func() bool {
		evs, err = cons.Fetch(ctx, 100)
		return err != nil || len(evs) > 0
	})
	must(t, err)
	if len(evs) == 0 {
		t.Fatal("the Game Master role read no event")
	}
	must(t, cons.Ack(ctx, evs[len(evs)-1]))
}

// findPsql returns psql from PATH, next to the server binaries, or from
// the newest /usr/lib/postgresql/*/bin; "" when there is none.
func findPsql() string {
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	var dirs []string
	if d, err := pgcluster.FindBinDir(); err == nil {
		dirs = append(dirs, d)
	}
	more, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.Reverse(more)
	for _, d := range append(dirs, more...) {
		if _, err := os.Stat(filepath.Join(d, "psql")); err == nil {
			return filepath.Join(d, "psql")
		}
	}
	return ""
}
