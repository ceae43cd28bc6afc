package readme_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/testutil/agentbin"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// The example values of the README's enqueue statement, replaced by this
// test's own: the container name is global on the daemon, the host id
// must be the test agent's, and the image must be one it has and allows.
const (
	readmeHost  = "'host-a'"
	readmeGame  = "'g1'"
	readmeImage = "registry.example.com/galaxy/engine:1.4"
)

// TestReadmeContract runs every SQL statement of the README's Game Master
// contract, as written, against a migrated database and a running agent:
// a start job enqueued and a second one cancelled while the host's agent
// is down; the agent started; the job runs, the record reads running,
// the other job ends cancelled; and the consumer's read loop delivers
// each of their events once, in order.
func TestReadmeContract(t *testing.T) {
	c := loadContract(t)
	ctx := context.Background()
	image := dockertest.EngineImage(t)
	hostID := dockertest.UniqueName(t)
	dockertest.Engine(t, hostID) // removes the host's containers and network at cleanup
	bin := agentbin.Build(t)
	dbURL := pgtest.URL(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	var b [4]byte
	_, _ = rand.Read(b[:])
	game, other := "readme-"+hex.EncodeToString(b[:]), "readme-"+hex.EncodeToString(b[:])+"-x"

	// Enqueue, as written but for the example values. The same insert
	// again (a retry) inserts nothing and returns no row.
	enqueue := func(game string) string {
		s := replace(t, c.sql(roleEnqueue), readmeHost, "'"+hostID+"'")
		s = replace(t, s, readmeGame, "'"+game+"'")
		return replace(t, s, readmeImage, image)
	}
	var startID, cancelID int64
	if err := conn.QueryRow(ctx, enqueue(game)).Scan(&startID); err != nil {
		t.Fatalf("README.md:%d: enqueue: %v\n%s", c.stmts[roleEnqueue].line, err, enqueue(game))
	}
	if err := conn.QueryRow(ctx, enqueue(game)).Scan(new(int64)); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("the enqueue repeated returned %v, want no row", err)
	}
	if err := conn.QueryRow(ctx, enqueue(other)).Scan(&cancelID); err != nil {
		t.Fatalf("enqueue the job to cancel: %v", err)
	}

	// Cancel the second job while no agent runs for the host: it stays
	// queued until the agent reaches it.
	tag, err := conn.Exec(ctx, c.sql(roleCancel), cancelID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("README.md:%d: cancel job %d: %v, %d rows", c.stmts[roleCancel].line, cancelID, err, tag.RowsAffected())
	}

	// The consumer is registered before anything happens: it starts at
	// the beginning of the outbox.
	gm := c.newReader(ctx, conn, "game-master", c.sql(roleReadOutbox))
	var pos string
	var posID int64
	if err := conn.QueryRow(ctx, gm.position).Scan(&pos, &posID); err != nil || pos != "0" || posID != 0 {
		t.Fatalf("a new consumer's position: (%s, %d), %v; want (0, 0)", pos, posID, err)
	}

	agent := startAgent(t, bin, map[string]string{
		"RTM_DATABASE_URL":   dbURL,
		"RTM_HOST_ID":        hostID,
		"RTM_DOCKER_NETWORK": "net-" + hostID,
		"RTM_STATE_ROOT":     t.TempDir(),
		"RTM_ALLOWED_IMAGES": dockertest.ImageRepo,
		"RTM_POLL_INTERVAL":  "200ms",
		"RTM_DRAIN_TIMEOUT":  "5s",
	})

	// A game's jobs: both end, the start succeeded, the other cancelled.
	jobStatus := func(game string, id int64) (string, error) {
		rows, err := conn.Query(ctx, c.sql(roleJobsOfGame), game)
		if err != nil {
			return "", err
		}
		jobs, err := pgx.CollectRows(rows, pgx.RowToMap)
		if err != nil {
			return "", err
		}
		for _, j := range jobs {
			if j["id"] == id {
				s, _ := j["status"].(string)
				return s, nil
			}
		}
		return "", fmt.Errorf("job %d is not among %s's jobs %v", id, game, jobs)
	}
	for id, want := range map[int64]string{startID: "succeeded", cancelID: "cancelled"} {
		g := game
		if id == cancelID {
			g = other
		}
		var got string
		wait.ForErr(t, 2*time.Minute, fmt.Sprintf("job %d of %s to end", id, g), func() (bool, error) {
			if !agent.alive() {
				t.Fatalf("the agent exited:\n%s", agent.log())
			}
			s, err := jobStatus(g, id)
			got = s
			return err == nil && (s == "succeeded" || s == "failed" || s == "cancelled"), err
		})
		if got != want {
			t.Fatalf("job %d of %s ended %s, want %s\nagent log:\n%s", id, g, got, want, agent.log())
		}
	}

	// The record of the game, and the host's running records.
	rows, err := conn.Query(ctx, c.sql(roleRecordOfGame), game)
	if err != nil {
		t.Fatalf("README.md:%d: read the record: %v", c.stmts[roleRecordOfGame].line, err)
	}
	recs, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil || len(recs) != 1 {
		t.Fatalf("the record of %s: %v, %v", game, recs, err)
	}
	if r := recs[0]; r["status"] != "running" || r["host_id"] != hostID || r["current_image_ref"] != image || r["current_container_id"] == nil {
		t.Fatalf("the record after the start job: %v", r)
	}
	rows, err = conn.Query(ctx, c.sql(roleRecordsOfHost), hostID)
	if err != nil {
		t.Fatalf("README.md:%d: read the host's records: %v", c.stmts[roleRecordsOfHost].line, err)
	}
	recs, err = pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil || len(recs) != 1 || recs[0]["game_id"] != game {
		t.Fatalf("the running records of %s: %v, %v; want only %s", hostID, recs, err, game)
	}

	// The read loop: the record's event and both jobs' outcomes, each
	// once, in (xid, id) order.
	want := map[string]int{
		"runtime.running " + game + " " + strconv.FormatInt(startID, 10): 1,
		"job.succeeded " + game + " " + strconv.FormatInt(startID, 10):   1,
		"job.cancelled " + other + " " + strconv.FormatInt(cancelID, 10): 1,
	}
	var got []event
	seen := map[string]int{}
	wait.For(t, time.Minute, "the consumer to read every expected event", func() bool {
		page := gm.drain(ctx, t, conn)
		for _, e := range page {
			job := int64(0)
			if e.jobID != nil {
				job = *e.jobID
			}
			seen[e.typ+" "+e.gameID+" "+strconv.FormatInt(job, 10)]++
		}
		got = append(got, page...)
		for k := range want {
			if seen[k] == 0 {
				return false
			}
		}
		return true
	})
	for i := 1; i < len(got); i++ {
		if got[i-1].xid > got[i].xid || got[i-1].xid == got[i].xid && got[i-1].id >= got[i].id {
			t.Fatalf("events out of (xid, id) order: %v", got)
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("the consumer read %v, want each of %v once", got, want)
	}
	// Acknowledged: the stored position is the last event's.
	if err := conn.QueryRow(ctx, gm.position).Scan(&pos, &posID); err != nil || pos != got[len(got)-1].xidArg || posID != got[len(got)-1].id {
		t.Fatalf("the consumer's position after the loop: (%s, %d), %v; want the last event %v", pos, posID, err, got[len(got)-1])
	}

	for _, r := range roles {
		if !c.ran[r.role] {
			t.Errorf("README.md:%d: the statement to %s did not run", c.stmts[r.role].line, r.role)
		}
	}
}

// agentProc is a running `rtmanager run`.
type agentProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (a *agentProc) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.Write(p)
}

func (a *agentProc) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

func (a *agentProc) alive() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// startAgent starts the binary's `rtmanager run` with env, stopped with
// SIGTERM at cleanup.
func startAgent(t *testing.T, bin string, env map[string]string) *agentProc {
	t.Helper()
	cmd := exec.Command(bin, "run", "--http-addr=")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	if v := os.Getenv("DOCKER_HOST"); v != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+v)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = a, a
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-a.done
			t.Errorf("the agent did not stop within a minute of SIGTERM")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log())
		}
	})
	return a
}
