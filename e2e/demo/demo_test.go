// Package demo_test runs the built rtmanager binary the way a newcomer
// does: `rtmanager dev` on its own throwaway PostgreSQL and the local
// Docker daemon, jobs enqueued with `rtmanager jobs enqueue`, and what
// happened read back with `records` and `events tail -o json`.
package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/agentbin"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/rtmclient"
)

// syncBuffer is a buffer a test reads while others write it.
type syncBuffer = syncbuf.Buffer

// childEnv is the test's environment without RTM_* settings, so that dev
// starts its own database.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "RTM_") && name != "RTM_PG_BIN_DIR" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

type devAgent struct {
	t              *testing.T
	bin            string
	hostID         string
	url, image     string
	stdout, stderr syncBuffer
	cmd            *exec.Cmd
	done           chan struct{}
	err            error
}

// startDev runs `rtmanager dev` on a data directory of its own and waits
// until the agent runs.
func startDev(t *testing.T, bin, hostID string) *devAgent {
	t.Helper()
	dir := t.TempDir()
	// As root the database runs as nobody, who must reach the data dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := &devAgent{t: t, bin: bin, hostID: hostID, done: make(chan struct{})}
	cmd := exec.Command(bin, "dev", "--data-dir", filepath.Join(dir, "dev"), "--reset", "--host-id", hostID,
		"--http-addr", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = &a.stdout, &a.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-a.done
			t.Errorf("rtmanager dev did not stop within a minute of SIGTERM")
		}
	})
	wait.For(t, 3*time.Minute, "rtmanager dev to start the agent", func() bool {
		select {
		case <-a.done:
			t.Fatalf("rtmanager dev exited early (%v):\n%s\n%s", a.err, a.stdout.String(), a.stderr.String())
		default:
		}
		return strings.Contains(a.stderr.String(), `"msg":"agent started"`)
	})
	banner := a.stdout.String()
	a.url, a.image = bannerValue(t, banner, "database"), bannerValue(t, banner, "engine image")
	for _, want := range []string{"host id      " + hostID, "http         http://127.0.0.1:", "rtmanager jobs enqueue", "INSERT INTO jobs"} {
		if !strings.Contains(banner, want) {
			t.Fatalf("the banner lacks %q:\n%s", want, banner)
		}
	}
	return a
}

// stop sends SIGTERM and expects a clean exit.
func (a *devAgent) stop() {
	a.t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	wait.For(a.t, time.Minute, "rtmanager dev to stop on SIGTERM", func() bool {
		select {
		case <-a.done:
			return true
		default:
			return false
		}
	})
	if a.err != nil {
		a.t.Fatalf("rtmanager dev exited with %v on SIGTERM:\n%s", a.err, a.stderr.String())
	}
}

// cli runs an operator command against the dev database and returns its
// standard output; a non-zero exit fails the test.
func (a *devAgent) cli(args ...string) []byte {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, args...)
	cmd.Env = childEnv("RTM_DATABASE_URL=" + a.url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		a.t.Fatalf("rtmanager %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func (a *devAgent) enqueue(game, kind, payload, traceparent string) rtmclient.Job {
	a.t.Helper()
	args := []string{"jobs", "enqueue", "-o", "json", "--host", a.hostID, "--game", game, "--kind", kind, "--payload", payload}
	if traceparent != "" {
		args = append(args, "--traceparent", traceparent)
	}
	var j rtmclient.Job
	if err := json.Unmarshal(a.cli(args...), &j); err != nil {
		a.t.Fatalf("jobs enqueue: %v", err)
	}
	return j
}

func (a *devAgent) job(id int64) rtmclient.Job {
	a.t.Helper()
	var j rtmclient.Job
	if err := json.Unmarshal(a.cli("jobs", "show", strconv.FormatInt(id, 10), "-o", "json"), &j); err != nil {
		a.t.Fatalf("jobs show: %v", err)
	}
	return j
}

func (a *devAgent) record(game string) rtmclient.Record {
	a.t.Helper()
	var r rtmclient.Record
	if err := json.Unmarshal(a.cli("records", "show", game, "-o", "json"), &r); err != nil {
		a.t.Fatalf("records show: %v", err)
	}
	return r
}

func (a *devAgent) events() []rtmclient.Event {
	a.t.Helper()
	var evs []rtmclient.Event
	sc := bufio.NewScanner(bytes.NewReader(a.cli("events", "tail", "-n", "10000", "-o", "json")))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev rtmclient.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			a.t.Fatalf("events tail: %v: %s", err, sc.Bytes())
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitJob waits until job id ends, and expects it to succeed.
func (a *devAgent) waitJob(id int64) rtmclient.Job {
	a.t.Helper()
	var j rtmclient.Job
	wait.For(a.t, time.Minute, fmt.Sprintf("job %d to end", id), func() bool {
		j = a.job(id)
		return j.Status.IsFinal()
	})
	if j.Status != rtmclient.JobSucceeded {
		a.t.Fatalf("job %d (%s %s) ended %s: %s\nagent log:\n%s", id, j.Kind, j.GameID, j.Status, j.LastError, a.stderr.String())
	}
	return j
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestDevEndToEnd: a game started, killed behind the agent's back and
// removed; another started, moved to another image and stopped — all
// through the CLI against `rtmanager dev`, checked in the records, the
// outbox and Docker.
func TestDevEndToEnd(t *testing.T) {
	docker := dockertest.Client(t)
	bin := agentbin.Build(t)
	hostID := dockertest.UniqueName(t)
	dockertest.RemoveLabelled(t, engine.LabelHost, hostID)
	a := startDev(t, bin, hostID)
	ctx := context.Background()

	// A second tag of the demo image, for the image change.
	image2 := "rtmanager-engine:e2e-" + randomHex(4)
	if _, err := docker.ImageTag(ctx, client.ImageTagOptions{Source: a.image, Target: image2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = docker.ImageRemove(context.Background(), image2, client.ImageRemoveOptions{}) })

	g1, g2 := hostID[len(hostID)-8:]+"-one", hostID[len(hostID)-8:]+"-two"
	traceID := randomHex(16)
	tp := "00-" + traceID + "-" + randomHex(8) + "-01"
	start1 := a.enqueue(g1, "start", fmt.Sprintf(`{"image_ref": %q}`, a.image), tp)
	start2 := a.enqueue(g2, "start", fmt.Sprintf(`{"image_ref": %q, "env": {"GAME_MODE": "e2e"}}`, a.image), "")
	if start1.Traceparent != tp || start2.Traceparent != "" {
		t.Fatalf("traceparents stored: %q, %q", start1.Traceparent, start2.Traceparent)
	}
	a.waitJob(start1.ID)
	a.waitJob(start2.ID)
	r1, r2 := a.record(g1), a.record(g2)
	for _, r := range []rtmclient.Record{r1, r2} {
		if r.Status != rtmclient.RecordRunning || r.HostID != hostID || r.CurrentImageRef != a.image || r.CurrentContainerID == "" {
			t.Fatalf("after start: %+v", r)
		}
		insp, err := docker.ContainerInspect(ctx, r.CurrentContainerID, client.ContainerInspectOptions{})
		if err != nil || !insp.Container.State.Running || insp.Container.Name != "/galaxy-game-"+r.GameID {
			t.Fatalf("container of %s: %+v %v", r.GameID, insp.Container.State, err)
		}
	}

	// Behind the agent's back: the record follows Docker.
	if _, err := docker.ContainerKill(ctx, r1.CurrentContainerID, client.ContainerKillOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, g1+" stopped after docker kill", func() bool {
		return a.record(g1).Status == rtmclient.RecordStopped
	})

	remove1 := a.enqueue(g1, "remove", `{}`, "")
	change2 := a.enqueue(g2, "change_image", fmt.Sprintf(`{"image_ref": %q}`, image2), "")
	a.waitJob(remove1.ID)
	a.waitJob(change2.ID)
	if r := a.record(g1); r.Status != rtmclient.RecordRemoved || r.CurrentContainerID != "" || r.RemovedAt == nil {
		t.Fatalf("after remove: %+v", r)
	}
	if _, err := docker.ContainerInspect(ctx, r1.CurrentContainerID, client.ContainerInspectOptions{}); err == nil {
		t.Fatalf("the removed game's container %s still exists", r1.CurrentContainerID)
	}
	changed := a.record(g2)
	if changed.Status != rtmclient.RecordRunning || changed.CurrentImageRef != image2 || changed.CurrentContainerID == r2.CurrentContainerID {
		t.Fatalf("after change_image: %+v (was %+v)", changed, r2)
	}
	if insp, err := docker.ContainerInspect(ctx, changed.CurrentContainerID, client.ContainerInspectOptions{}); err != nil ||
		!insp.Container.State.Running || insp.Container.Config.Image != image2 {
		t.Fatalf("container after change_image: %v", err)
	}

	stop2 := a.enqueue(g2, "stop", `{"timeout_seconds": 10}`, "")
	a.waitJob(stop2.ID)
	if r := a.record(g2); r.Status != rtmclient.RecordStopped || r.CurrentContainerID != changed.CurrentContainerID {
		t.Fatalf("after stop: %+v", r)
	}

	// The outbox: every job once, with its outcome; every game's runtime
	// events a chain of transitions that ends where its record is.
	var evs []rtmclient.Event
	wait.For(t, time.Minute, "the outbox to show every job's outcome", func() bool {
		evs = a.events()
		n := 0
		for _, ev := range evs {
			if ev.Type == rtmclient.EventJobSucceeded && ev.HostID == hostID {
				n++
			}
		}
		return n == 5
	})
	seen := map[int64]bool{}
	jobsDone := map[int64]int{}
	type state struct {
		status rtmclient.RecordStatus
		events []string
	}
	games := map[string]*state{g1: {}, g2: {}}
	for _, ev := range evs {
		if seen[ev.ID] {
			t.Fatalf("event %d twice", ev.ID)
		}
		seen[ev.ID] = true
		if ev.HostID != hostID {
			continue
		}
		switch {
		case ev.IsJob():
			p, err := ev.JobPayload()
			if err != nil || p.Status != rtmclient.JobSucceeded {
				t.Fatalf("job event %d: %+v %v", ev.ID, p, err)
			}
			jobsDone[p.JobID]++
		case ev.IsRuntime():
			p, err := ev.RuntimePayload()
			if err != nil {
				t.Fatal(err)
			}
			s := games[ev.GameID]
			if s == nil {
				t.Fatalf("event for an unknown game: %+v", ev)
			}
			if p.FromStatus != s.status {
				t.Fatalf("%s: event %d goes %q -> %q but the game was %q; events so far %v", ev.GameID, ev.ID, p.FromStatus, p.ToStatus, s.status, s.events)
			}
			s.status = p.ToStatus
			s.events = append(s.events, fmt.Sprintf("%s(%s)", p.ToStatus, p.Reason))
			if ev.GameID == g1 && p.ToStatus == rtmclient.RecordStopped && (p.ExitCode == nil || *p.ExitCode != 137) {
				t.Fatalf("%s killed: exit code %v, want 137", g1, p.ExitCode)
			}
		}
	}
	for _, id := range []int64{start1.ID, start2.ID, remove1.ID, change2.ID, stop2.ID} {
		if jobsDone[id] != 1 {
			t.Fatalf("job %d has %d job.succeeded events, want 1 (%v)", id, jobsDone[id], jobsDone)
		}
	}
	if s := games[g1]; s.status != rtmclient.RecordRemoved || s.events[0] != "running(job_start)" {
		t.Fatalf("%s events: %v", g1, s.events)
	}
	if s := games[g2]; s.status != rtmclient.RecordStopped || s.events[0] != "running(job_start)" ||
		!containsEvent(s.events, "running(job_change_image)") {
		t.Fatalf("%s events: %v", g2, s.events)
	}

	a.stop()
}

func containsEvent(evs []string, want string) bool {
	for _, e := range evs {
		if e == want {
			return true
		}
	}
	return false
}

func bannerValue(t *testing.T, banner, key string) string {
	t.Helper()
	for _, line := range strings.Split(banner, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), key+" "); ok && strings.HasPrefix(line, "  ") {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	t.Fatalf("the banner has no %q line:\n%s", key, banner)
	return ""
}
