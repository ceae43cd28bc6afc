package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/rtmclient"
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if err := writeReport(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: write report:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// agentBinary builds the rtmanager binary once per test binary.
func agentBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "rtm-faults-bin-")
		if buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		binPath = filepath.Join(buildDir, "rtmanager")
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/galaxy/rtmanager/agent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build the rtmanager binary: %v", buildErr)
	}
	return binPath
}

// rounds is RTM_FAULT_ROUNDS, or def.
func rounds(t testing.TB, def int) int {
	v := os.Getenv("RTM_FAULT_ROUNDS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("RTM_FAULT_ROUNDS=%q is not a positive number", v)
	}
	return n
}

// harness is one scenario's world: a database, a host id of its own (so
// its containers, network and jobs are its own), a state root, the test
// engine image, agent processes and a Game Master simulator.
type harness struct {
	t         *testing.T
	ctx       context.Context
	dbURL     string
	pool      *pgxpool.Pool // the Game Master's SQL (and the checker's)
	store     *db.Store     // for the checker's reads
	hostID    string
	prefix    string // of game ids, unique per test: container names are global
	network   string
	stateRoot string
	image     string
	eng       *engine.Docker
	raw       *client.Client
	env       map[string]string

	mu     sync.Mutex
	agents []*agentProc
	seq    int

	consumer *gmConsumer
}

type harnessOptions struct {
	// dbURL: empty takes a fresh pgtest database.
	dbURL string
	// env overrides the agent's RTM_* settings.
	env map[string]string
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	hostID := dockertest.UniqueName(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	h := &harness{
		t:         t,
		ctx:       context.Background(),
		dbURL:     o.dbURL,
		hostID:    hostID,
		prefix:    hex.EncodeToString(b[:]),
		stateRoot: t.TempDir(),
		eng:       dockertest.Engine(t, hostID),
		raw:       dockertest.Client(t),
		image:     dockertest.EngineImage(t),
	}
	h.network = "rtmf-" + h.prefix
	if h.dbURL == "" {
		h.dbURL = pgtest.URL(t)
	}
	pool, err := db.Connect(h.ctx, h.dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h.pool, h.store = pool, db.NewStore(pool, nil)
	h.env = map[string]string{
		"RTM_DATABASE_URL":        h.dbURL,
		"RTM_HOST_ID":             hostID,
		"RTM_DOCKER_NETWORK":      h.network,
		"RTM_STATE_ROOT":          h.stateRoot,
		"RTM_ALLOWED_IMAGES":      dockertest.ImageRepo,
		"RTM_HEARTBEAT_INTERVAL":  "1s",
		"RTM_HOST_LEASE_TTL":      "6s",
		"RTM_HOST_LEASE_POLL":     "500ms",
		"RTM_LEASE_DURATION":      "3s",
		"RTM_POLL_INTERVAL":       "250ms",
		"RTM_DRAIN_TIMEOUT":       "5s",
		"RTM_EVENTS_IDLE_TIMEOUT": "5s",
		"RTM_RECONCILE_INTERVAL":  "1s",
		"RTM_CONCURRENCY":         "4",
		"RTM_LOG_LEVEL":           "info",
	}
	for k, v := range o.env {
		h.env[k] = v
	}
	t.Cleanup(func() {
		h.mu.Lock()
		agents := append([]*agentProc(nil), h.agents...)
		h.mu.Unlock()
		for _, a := range agents {
			a.signal(syscall.SIGKILL)
			a.wait(30 * time.Second)
		}
		if t.Failed() || os.Getenv("RTM_FAULT_LOGS") != "" {
			for _, a := range agents {
				t.Logf("--- log of %s (last 40 lines) ---\n%s", a.name, tail(a.logPath, 40))
			}
		}
	})
	return h
}

// game returns a game id unique to this test.
func (h *harness) game(name string) string { return h.prefix + "-" + name }

// agentProc is one rtmanager run process.
type agentProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startAgent starts `rtmanager run` with the harness's settings plus
// extra (NAME=value) ones.
func (h *harness) startAgent(extra ...string) *agentProc {
	h.t.Helper()
	bin := agentBinary(h.t)
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("agent-%d", h.seq)
	h.mu.Unlock()
	logPath := filepath.Join(h.t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		h.t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	if v := os.Getenv("DOCKER_HOST"); v != "" {
		env = append(env, "DOCKER_HOST="+v)
	}
	for k, v := range h.env {
		env = append(env, k+"="+v)
	}
	env = append(env, extra...)
	// --http-addr= turns the health endpoint off: parallel agents would
	// fight over its port.
	cmd := exec.Command(bin, "run", "--http-addr=")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		h.t.Fatalf("start %s: %v", name, err)
	}
	a := &agentProc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		_ = logf.Close()
		close(a.done)
	}()
	h.mu.Lock()
	h.agents = append(h.agents, a)
	h.mu.Unlock()
	return a
}

func (a *agentProc) alive() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func (a *agentProc) signal(sig syscall.Signal) {
	if a.alive() {
		_ = a.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and reports whether it did in time.
func (a *agentProc) wait(d time.Duration) bool {
	select {
	case <-a.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill SIGKILLs the agent and waits for it to be gone.
func (h *harness) kill(a *agentProc) {
	h.t.Helper()
	a.signal(syscall.SIGKILL)
	if !a.wait(30 * time.Second) {
		h.t.Fatalf("%s did not die of SIGKILL", a.name)
	}
}

// exitCode returns the exit code of an exited agent (-1 when killed).
func (a *agentProc) exitCode() int {
	<-a.done
	var ee *exec.ExitError
	if errors.As(a.err, &ee) {
		return ee.ExitCode()
	}
	if a.err != nil {
		return -1
	}
	return 0
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls cond every 50ms until it holds or d passes; it reports
// whether it held. Unlike wait.For it does not fail the test: the checker
// counts what never came.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// --- the Game Master simulator ---

// enqueue inserts a job with plain SQL, as the Game Master does, retrying
// while the database is away (for up to a minute). maxAttempts 0 is the
// agent's default.
func (h *harness) enqueue(gameID, kind, payload string, maxAttempts int) int64 {
	h.t.Helper()
	return h.enqueueFor(h.hostID, gameID, kind, payload, maxAttempts)
}

func (h *harness) enqueueFor(hostID, gameID, kind, payload string, maxAttempts int) int64 {
	h.t.Helper()
	var id int64
	var lastErr error
	ok := waitUntil(time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		defer cancel()
		lastErr = h.pool.QueryRow(ctx,
			`INSERT INTO jobs (host_id, game_id, kind, payload, max_attempts) VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id`,
			hostID, gameID, kind, payload, maxAttempts).Scan(&id)
		return lastErr == nil
	})
	if !ok {
		h.t.Fatalf("enqueue %s %s: %v", kind, gameID, lastErr)
	}
	return id
}

func startPayload(image string) string {
	return fmt.Sprintf(`{"image_ref": %q}`, image)
}

// gmConsumer is the Game Master's outbox reader: rtmclient's consumer,
// recording every event it is handed.
type gmConsumer struct {
	mu     sync.Mutex
	events []rtmclient.Event
	errs   int
	stop   context.CancelFunc
	done   chan struct{}
}

func (h *harness) startConsumer() *gmConsumer {
	h.t.Helper()
	cl, err := rtmclient.Connect(h.ctx, h.dbURL)
	if err != nil {
		h.t.Fatal(err)
	}
	gc := &gmConsumer{done: make(chan struct{})}
	c, err := cl.Consumer(h.ctx, "gm-sim", rtmclient.ConsumerOptions{
		PollInterval: 200 * time.Millisecond,
		OnError: func(error) {
			gc.mu.Lock()
			gc.errs++
			gc.mu.Unlock()
		},
	})
	if err != nil {
		cl.Close()
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	gc.stop = cancel
	go func() {
		defer close(gc.done)
		defer cl.Close()
		for ctx.Err() == nil {
			err := c.Run(ctx, func(_ context.Context, ev rtmclient.Event) error {
				gc.mu.Lock()
				gc.events = append(gc.events, ev)
				gc.mu.Unlock()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				gc.mu.Lock()
				gc.errs++
				gc.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	h.t.Cleanup(func() { cancel(); <-gc.done })
	h.consumer = gc
	return gc
}

func (gc *gmConsumer) seen() []rtmclient.Event {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return append([]rtmclient.Event(nil), gc.events...)
}

// failures is how many errors the consumer reported: failed reads and
// acknowledgements, after which events may come again.
func (gc *gmConsumer) failures() int {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.errs
}

// firstDeliveries is evs without the events delivered again, as a Game
// Master that deduplicates by id keeps them.
func firstDeliveries(evs []rtmclient.Event) []rtmclient.Event {
	seen := make(map[int64]bool, len(evs))
	var first []rtmclient.Event
	for _, ev := range evs {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			first = append(first, ev)
		}
	}
	return first
}
