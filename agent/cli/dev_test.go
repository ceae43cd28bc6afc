package cli

import (
	"context"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// syncBuffer is a buffer a test reads while others write it.
type syncBuffer = syncbuf.Buffer

// TestDevStartsItsOwnDatabase runs `rtmanager dev` with no database URL:
// it starts a local PostgreSQL in its data directory, migrates it, builds
// the demo image, runs the agent, and keeps the database for the next run.
func TestDevStartsItsOwnDatabase(t *testing.T) {
	dockertest.Client(t)
	t.Setenv("RTM_DATABASE_URL", "")
	dir := t.TempDir()
	// The database runs as an unprivileged user when the test runs as root.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := filepath.Join(dir, "dev")
	hostID := dockertest.UniqueName(t)

	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"dev", "--data-dir", dataDir, "--host-id", hostID, "--log-format", "json", "--http-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0"}, &env{stdout: &out, stderr: &errOut})
		}()
		wait.For(t, 2*time.Minute, "the dev agent to start", func() bool {
			select {
			case code := <-done:
				t.Fatalf("round %d: dev exited early with %d:\n%s\n%s", round, code, out.String(), errOut.String())
			default:
			}
			return strings.Contains(errOut.String(), `"msg":"agent started"`)
		})
		banner := out.String()
		for _, want := range []string{"database", "http         http://127.0.0.1:", "host id      " + hostID, "INSERT INTO jobs", "rtmanager jobs enqueue", "rtmanager-engine:"} {
			if !strings.Contains(banner, want) {
				t.Fatalf("round %d: banner lacks %q:\n%s", round, want, banner)
			}
		}
		// The console runs beside the agent, on the same database, with
		// actions and a token of its own.
		consoleURL, token := bannerField(banner, "console"), bannerField(banner, "token")
		if !strings.HasPrefix(consoleURL, "http://127.0.0.1:") || !strings.Contains(banner, "actions on: token") || len(token) < 16 {
			t.Fatalf("round %d: the banner lacks the console's token:\n%s", round, banner)
		}
		resp, err := http.Get(consoleURL + "/")
		if err != nil {
			t.Fatalf("round %d: the console at %s: %v", round, consoleURL, err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), hostID) {
			t.Fatalf("round %d: the console's fleet page: %d, without host %s:\n%s", round, resp.StatusCode, hostID, page)
		}
		url := bannerValue(t, banner, "database")
		pool, err := db.Connect(context.Background(), url, nil)
		if err != nil {
			t.Fatalf("round %d: the printed database URL does not work: %v", round, err)
		}
		h, err := db.NewStore(pool, nil).GetHost(context.Background(), hostID)
		pool.Close()
		if err != nil {
			t.Fatalf("round %d: host not registered: %v", round, err)
		}
		if round == 2 && !h.CreatedAt.Before(h.StartedAt) {
			t.Fatalf("round 2 did not find the host row of round 1: the database was not kept (%+v)", h)
		}
		cancel()
		if code := <-done; code != ExitOK {
			t.Fatalf("round %d: dev exited %d:\n%s", round, code, errOut.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "PG_VERSION")); err != nil {
		t.Fatalf("the dev database is not kept in the data directory: %v", err)
	}
	// Game state directories must resolve inside the state root: dev
	// creates it.
	if fi, err := os.Stat(filepath.Join(dataDir, "state")); err != nil || !fi.IsDir() {
		t.Fatalf("the dev state root was not created: %v", err)
	}
}

func TestDevWithoutPostgresBinariesSaysWhatToInstall(t *testing.T) {
	t.Setenv("RTM_DATABASE_URL", "")
	t.Setenv("RTM_PG_BIN_DIR", t.TempDir())
	r := runCLI(context.Background(), "dev", "--data-dir", t.TempDir())
	if r.code != ExitError {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	oneLine(t, r, "apt-get install postgresql")
}

func bannerValue(t *testing.T, banner, key string) string {
	t.Helper()
	for _, line := range strings.Split(banner, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == key {
			return fields[1]
		}
	}
	t.Fatalf("banner has no %q line:\n%s", key, banner)
	return ""
}

// bannerField is the first word after key on its banner line.
func bannerField(banner, key string) string {
	for _, line := range strings.Split(banner, "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == key {
			return fields[1]
		}
	}
	return ""
}
