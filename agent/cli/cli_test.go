package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(ctx context.Context, args ...string) result {
	var out, errOut bytes.Buffer
	code := run(ctx, args, &env{stdout: &out, stderr: &errOut})
	return result{code, out.String(), errOut.String()}
}

// oneLine asserts that a failing command said what is wrong in one line.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	msg := strings.TrimRight(r.stderr, "\n")
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, want) {
		t.Fatalf("want one line containing %q on stderr, got:\n%s", want, r.stderr)
	}
}

func TestHelpAndUsageErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if r := runCLI(ctx, "--help"); r.code != ExitOK || !strings.Contains(r.stdout, "migrate") || !strings.Contains(r.stdout, "run") {
		t.Fatalf("--help: %+v", r)
	}
	if r := runCLI(ctx, "run", "--help"); r.code != ExitOK || !strings.Contains(r.stderr, "RTM_DATABASE_URL") || !strings.Contains(r.stderr, "RTM_HOST_ID") {
		t.Fatalf("run --help does not list the environment variables: %+v", r)
	}
	r := runCLI(ctx, "frobnicate")
	if r.code != ExitUsage {
		t.Fatalf("unknown command: exit %d", r.code)
	}
	oneLine(t, r, "unknown command")
	r = runCLI(ctx, "migrate", "sideways", "--database-url", "postgres://x@127.0.0.1/x")
	if r.code != ExitUsage {
		t.Fatalf("unknown migrate action: exit %d", r.code)
	}
}

func TestBadConfigurationSaysWhatToFix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no database", []string{"run", "--database-url="}, ExitUsage, "RTM_DATABASE_URL"},
		{"bad url", []string{"run", "--database-url", "postgres://rtm:pw@host:port/db"}, ExitError, "database URL is not valid"},
		{"unreachable", []string{"run", "--database-url", "postgres://rtm:pw@127.0.0.1:1/rtm?connect_timeout=2"}, ExitError, "cannot connect to PostgreSQL"},
		{"migrate unreachable", []string{"migrate", "--database-url", "postgres://rtm:pw@127.0.0.1:1/rtm?connect_timeout=2", "up"}, ExitError, "cannot connect to PostgreSQL"},
		{"bad log format", []string{"run", "--database-url", "postgres://x@127.0.0.1/x", "--log-format", "xml"}, ExitUsage, "--log-format"},
		{"relative state root", []string{"run", "--database-url", "postgres://x@127.0.0.1/x", "--state-root", "state"}, ExitUsage, "--state-root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(ctx, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tc.code, r.stderr)
			}
			oneLine(t, r, tc.want)
			if strings.Contains(r.stderr, ":pw@") {
				t.Fatalf("the password reached the output: %s", r.stderr)
			}
		})
	}
}

func TestMalformedEnvironmentIsAUsageError(t *testing.T) {
	t.Setenv("RTM_HEARTBEAT_INTERVAL", "often")
	r := runCLI(context.Background(), "run", "--database-url", "postgres://x@127.0.0.1/x")
	if r.code != ExitUsage {
		t.Fatalf("exit %d", r.code)
	}
	oneLine(t, r, "RTM_HEARTBEAT_INTERVAL")
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pgtest.EmptyURL(t)

	if r := runCLI(ctx, "migrate", "--database-url", u, "up"); r.code != ExitOK {
		t.Fatalf("migrate up: %+v", r)
	}
	if r := runCLI(ctx, "migrate", "--database-url", u, "version"); r.code != ExitOK || !strings.Contains(r.stdout, fmt.Sprintf("version %d (clean)", db.SchemaVersion)) {
		t.Fatalf("migrate version: %+v", r)
	}
	if r := runCLI(ctx, "migrate", "--database-url", u, "down"); r.code != ExitOK || !strings.Contains(r.stdout, "schema at version") || strings.Contains(r.stdout, fmt.Sprintf("version %d\n", db.SchemaVersion)) {
		t.Fatalf("migrate down: %+v", r)
	}

	// A migration that failed half-way leaves the schema dirty: the agent
	// refuses to go on and says how to recover.
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "TRUNCATE schema_migrations; INSERT INTO schema_migrations (version, dirty) VALUES (1, true)"); err != nil {
		t.Fatal(err)
	}
	r := runCLI(ctx, "run", "--database-url", u)
	if r.code != ExitError {
		t.Fatalf("run on a dirty schema: exit %d", r.code)
	}
	oneLine(t, r, "rtmanager migrate force")
	r = runCLI(ctx, "run", "--database-url", u, "--auto-migrate=false")
	if r.code != ExitError {
		t.Fatalf("run without auto-migrate on a dirty schema: exit %d", r.code)
	}
	oneLine(t, r, "rtmanager migrate up")
}

func TestRunWithoutDockerSaysSo(t *testing.T) {
	t.Parallel()
	r := runCLI(context.Background(), "run", "--database-url", pgtest.URL(t), "--docker-host", "unix:///nonexistent/docker.sock")
	if r.code != ExitError {
		t.Fatalf("exit %d; stderr: %s", r.code, r.stderr)
	}
	oneLine(t, r, "cannot reach the Docker daemon")
}

// TestRunRegistersAndStops runs the agent against the real PostgreSQL and
// Docker: it migrates, registers its host, and exits 0 when told to stop.
func TestRunRegistersAndStops(t *testing.T) {
	t.Parallel()
	dockertest.Client(t) // skips without a daemon, fails under CI
	u := pgtest.URL(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hostID := dockertest.UniqueName(t)
	done := make(chan result, 1)
	go func() {
		done <- runCLI(ctx, "run", "--database-url", u, "--host-id", hostID, "--heartbeat-interval", "50ms", "--log-format", "json", "--http-addr", "127.0.0.1:0")
	}()

	pool, err := db.Connect(context.Background(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	var first db.Host
	wait.For(t, 30*time.Second, "the agent to register its host", func() bool {
		first, err = store.GetHost(context.Background(), hostID)
		return err == nil
	})
	wait.For(t, 30*time.Second, "a heartbeat", func() bool {
		h, err := store.GetHost(context.Background(), hostID)
		return err == nil && h.HeartbeatAt.After(first.HeartbeatAt)
	})
	cancel()
	r := <-done
	if r.code != ExitOK {
		t.Fatalf("run exited %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `"msg":"agent started"`) || !strings.Contains(r.stderr, `"msg":"agent stopped"`) {
		t.Fatalf("logs lack start/stop lines:\n%s", r.stderr)
	}
}
