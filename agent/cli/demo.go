package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/engineimage"
	"github.com/galaxy/rtmanager/rtmclient"
)

// cmdDemo is `make demo` (a hidden command): it starts `rtmanager dev` on
// a throwaway database and plays the Game Master against it — three games
// started, one container killed behind the agent's back, one stopped, one
// removed, one moved to another image — printing the records and the
// outbox as it goes. Every step waits, with a deadline, until what it
// printed really happened (polling the operator commands' -o json), and
// the demo exits non-zero when one does not. It cleans up its containers
// and stops the agent however it ends.
func cmdDemo(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("rtmanager demo", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	stepTimeout := fs.Duration("step-timeout", 60*time.Second, "how long each step may take to happen")
	startTimeout := fs.Duration("start-timeout", 3*time.Minute, "how long `rtmanager dev` may take to come up (first run: initdb and the engine image build)")
	keep := fs.Bool("keep", false, "leave the agent's data directory (database, logs) in place at the end")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() != 0 || *stepTimeout <= 0 || *startTimeout <= 0 {
		return usageError(e, "demo", fmt.Errorf("no arguments expected, and timeouts must be positive"))
	}
	self, err := os.Executable()
	if err != nil {
		return fail(e, "demo", fmt.Errorf("find this program: %w", err))
	}
	run := randomHex(2)
	d := &demo{
		w: e.stdout, self: self, run: run, stepTimeout: *stepTimeout, startTimeout: *startTimeout, keep: *keep,
		hostID:   "demo-" + run,
		consumer: "demo-" + run,
		games:    [3]string{"alpha-" + run, "bravo-" + run, "charlie-" + run},
	}
	err = d.play(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted in step %d", d.stepN)
	}
	if cerr := d.cleanup(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(d.w)
		fmt.Fprintln(d.w, "DEMO FAILED")
		return fail(e, "demo", err)
	}
	return ExitOK
}

type demo struct {
	w                         io.Writer
	self, run                 string
	stepTimeout, startTimeout time.Duration
	keep                      bool

	hostID, consumer string
	games            [3]string

	dir            string // temporary directory: dev's data dir and logs
	devOut, devLog string
	dev            *exec.Cmd
	devDone        chan struct{}
	devErr         error

	url, httpAddr  string
	consoleURL     string // the dev agent's console, "" when it did not start
	image, image2  string
	image2Tagged   bool
	jobs           []demoJob
	stepN          int
	kill           string // what the docker kill did, for the summary
	startedPlaying time.Time
}

// demoJob is a job the demo enqueued, for the summary.
type demoJob struct {
	id      int64
	game    string
	kind    string
	traceID string
	status  string
}

func (d *demo) play(ctx context.Context) error {
	d.startedPlaying = time.Now()
	fmt.Fprintf(d.w, "rtmanager demo: the Game Master's side of the loop, against `rtmanager dev` (host %s)\n", d.hostID)
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("the demo kills a container with the Docker CLI, and there is no `docker` on PATH: install it (apt-get install docker.io)")
	}
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Errorf("the Docker daemon does not answer (%s): start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &`)", oneLineOf(out, err))
	}
	if err := d.startDev(ctx); err != nil {
		return err
	}
	A, B, C := d.games[0], d.games[1], d.games[2]

	d.heading("The Game Master starts three games")
	for _, g := range d.games {
		if _, err := d.enqueue(ctx, g, "start", fmt.Sprintf(`{"image_ref": %q, "env": {"GAME_MODE": "demo"}}`, d.image)); err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, "the three games running, each in its own container", func(ctx context.Context) (bool, string, error) {
		if ok, s, err := d.jobsSucceeded(ctx); !ok || err != nil {
			return ok, s, err
		}
		recs, err := d.records(ctx)
		if err != nil {
			return false, "", err
		}
		for _, g := range d.games {
			r, ok := recs[g]
			if !ok || r.Status != rtmclient.RecordRunning || r.CurrentContainerID == "" {
				return false, "record of " + g + ": " + describeRecord(r, ok), nil
			}
			if running, err := d.containerRunning(ctx, g, r.CurrentContainerID); err != nil || !running {
				return false, "container galaxy-game-" + g + " not running", err
			}
		}
		return true, "", nil
	}); err != nil {
		return err
	}
	if err := d.showState(ctx); err != nil {
		return err
	}

	d.heading("Someone kills " + A + "'s container behind the agent's back")
	before, err := d.record(ctx, A)
	if err != nil {
		return err
	}
	if err := d.docker(ctx, "kill", "galaxy-game-"+A); err != nil {
		return err
	}
	if err := d.waitFor(ctx, "the agent to see the container die: "+A+" stopped (observed_die)", func(ctx context.Context) (bool, string, error) {
		r, err := d.record(ctx, A)
		if err != nil || r.Status != rtmclient.RecordStopped {
			return false, "record: " + describeRecord(r, err == nil), err
		}
		ev, err := d.findEvent(ctx, A, rtmclient.EventRuntimeStopped, "observed_die", before.CurrentContainerID)
		if err != nil || ev == nil {
			return false, "no runtime.stopped (observed_die) event yet", err
		}
		d.kill = "stopped (observed_die" + exitOf(ev) + ")"
		return true, "", nil
	}); err != nil {
		return err
	}
	if err := d.showState(ctx); err != nil {
		return err
	}

	d.heading("The Game Master stops " + B + " through a job")
	if _, err := d.enqueue(ctx, B, "stop", `{"timeout_seconds": 10}`); err != nil {
		return err
	}
	if err := d.waitFor(ctx, B+" stopped by its job, its container exited", func(ctx context.Context) (bool, string, error) {
		if ok, s, err := d.jobsSucceeded(ctx); !ok || err != nil {
			return ok, s, err
		}
		r, err := d.record(ctx, B)
		if err != nil || r.Status != rtmclient.RecordStopped {
			return false, "record: " + describeRecord(r, err == nil), err
		}
		running, err := d.containerRunning(ctx, B, r.CurrentContainerID)
		return !running && err == nil, "container still running", err
	}); err != nil {
		return err
	}
	if err := d.showState(ctx); err != nil {
		return err
	}

	d.heading("The Game Master removes " + A + " (the one that was killed)")
	if _, err := d.enqueue(ctx, A, "remove", `{}`); err != nil {
		return err
	}
	if err := d.waitFor(ctx, A+" removed: record terminal, container gone", func(ctx context.Context) (bool, string, error) {
		if ok, s, err := d.jobsSucceeded(ctx); !ok || err != nil {
			return ok, s, err
		}
		r, err := d.record(ctx, A)
		if err != nil || r.Status != rtmclient.RecordRemoved {
			return false, "record: " + describeRecord(r, err == nil), err
		}
		ids, err := d.containers(ctx, A)
		return len(ids) == 0 && err == nil, fmt.Sprintf("%d container(s) still named galaxy-game-%s", len(ids), A), err
	}); err != nil {
		return err
	}
	if err := d.showState(ctx); err != nil {
		return err
	}

	d.heading("The Game Master moves " + C + " to another image")
	before, err = d.record(ctx, C)
	if err != nil {
		return err
	}
	if _, err := d.enqueue(ctx, C, "change_image", fmt.Sprintf(`{"image_ref": %q, "env": {"GAME_MODE": "demo"}}`, d.image2)); err != nil {
		return err
	}
	if err := d.waitFor(ctx, C+" running on "+d.image2+" in a new container", func(ctx context.Context) (bool, string, error) {
		if ok, s, err := d.jobsSucceeded(ctx); !ok || err != nil {
			return ok, s, err
		}
		r, err := d.record(ctx, C)
		if err != nil || r.Status != rtmclient.RecordRunning || r.CurrentImageRef != d.image2 || r.CurrentContainerID == before.CurrentContainerID {
			return false, "record: " + describeRecord(r, err == nil), err
		}
		running, err := d.containerRunning(ctx, C, r.CurrentContainerID)
		return running && err == nil, "new container not running", err
	}); err != nil {
		return err
	}
	if err := d.showState(ctx); err != nil {
		return err
	}

	return d.summary(ctx)
}

// startDev starts `rtmanager dev` in the background on a data directory
// of its own and waits until it is ready.
func (d *demo) startDev(ctx context.Context) error {
	base := os.TempDir()
	if os.Geteuid() == 0 && !traversableByAll(base) {
		base = "/tmp" // PostgreSQL runs as nobody, who must reach the data dir
	}
	dir, err := os.MkdirTemp(base, "rtmanager-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	// As root, PostgreSQL runs as nobody, who must be able to reach its
	// data directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	d.devOut, d.devLog = filepath.Join(dir, "dev.out"), filepath.Join(dir, "agent.log")
	out, err := os.Create(d.devOut)
	if err != nil {
		return err
	}
	defer out.Close()
	logf, err := os.Create(d.devLog)
	if err != nil {
		return err
	}
	defer logf.Close()

	args := []string{"dev", "--data-dir", filepath.Join(dir, "dev"), "--reset", "--host-id", d.hostID, "--http-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0"}
	d.heading("Start the agent on a throwaway database")
	fmt.Fprintf(d.w, "$ rtmanager %s &   (log: %s)\n", strings.Join(args, " "), d.devLog)
	cmd := exec.Command(d.self, args...)
	cmd.Env = demoDevEnv()
	cmd.Stdout, cmd.Stderr = out, logf
	// If the demo dies without cleaning up, the agent gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rtmanager dev: %w", err)
	}
	d.dev, d.devDone = cmd, make(chan struct{})
	go func() {
		d.devErr = cmd.Wait()
		close(d.devDone)
	}()

	deadline := time.Now().Add(d.startTimeout)
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	var banner map[string]string
	for {
		b, _ := os.ReadFile(d.devOut)
		if bytes.Contains(b, []byte("Watch what happened:")) {
			banner = parseBanner(string(b))
			d.url, d.httpAddr, d.image = banner["database"], strings.TrimPrefix(banner["http"], "http://"), banner["engine image"]
			d.consoleURL = banner["console"]
			if d.ready(ctx) {
				break
			}
		}
		select {
		case <-d.devDone:
			return fmt.Errorf("rtmanager dev exited before it was ready (%v); the end of its log:\n%s", d.devErr, tailFile(d.devLog, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rtmanager dev was not ready within %s; the end of its log:\n%s", d.startTimeout, tailFile(d.devLog, 15))
		}
	}
	if d.url == "" || d.image == "" || !strings.HasPrefix(d.image, engineimage.DefaultRepo+":") {
		return fmt.Errorf("rtmanager dev's banner lacks the database or the engine image:\n%s", tailFile(d.devOut, 30))
	}
	fmt.Fprintf(d.w, "agent ready after %s: http://%s/readyz answers 200\n", time.Since(d.startedPlaying).Round(100*time.Millisecond), d.httpAddr)
	fmt.Fprintf(d.w, "  database     %s\n  engine image %s\n", d.url, d.image)
	if strings.HasPrefix(d.consoleURL, "http") {
		fmt.Fprintf(d.w, "  console      %s   (open it to watch the demo live)\n", d.consoleURL)
	}
	fmt.Fprintf(d.w, "\nThe operator commands below read the same database:\n$ export RTM_DATABASE_URL='%s'\n", d.url)
	if err := d.show(ctx, "hosts", "list"); err != nil {
		return err
	}
	// A second tag of the demo engine, so that a game can change image
	// without a registry. dev allows the whole rtmanager-engine repository.
	d.image2 = engineimage.DefaultRepo + ":v2-" + d.run
	if err := d.docker(ctx, "tag", d.image, d.image2); err != nil {
		return err
	}
	d.image2Tagged = true
	return nil
}

// ready reports whether the agent's /readyz answers 200 (the agent's own
// health endpoint on loopback, not a container's address).
func (d *demo) ready(ctx context.Context) bool {
	if d.httpAddr == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.httpAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cleanup stops the agent and removes the demo's containers, the second
// image tag and the temporary directory.
func (d *demo) cleanup() error {
	if d.dir == "" {
		return nil
	}
	fmt.Fprintln(d.w)
	fmt.Fprintln(d.w, "Cleaning up")
	var errs []error
	if d.dev != nil {
		select {
		case <-d.devDone:
			fmt.Fprintf(d.w, "  the agent had already exited (%v)\n", d.devErr)
		default:
			_ = d.dev.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.devDone:
				fmt.Fprintln(d.w, "  agent stopped (SIGTERM)")
			case <-time.After(45 * time.Second):
				_ = d.dev.Process.Kill()
				<-d.devDone
				errs = append(errs, fmt.Errorf("the agent did not stop within 45s of SIGTERM; killed it"))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--filter", "label="+engine.LabelHost+"="+d.hostID).Output()
	if err != nil {
		errs = append(errs, fmt.Errorf("list the demo's containers: %w", err))
	} else if ids := strings.Fields(string(out)); len(ids) > 0 {
		if out, err := exec.CommandContext(ctx, "docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("remove the demo's containers: %s", oneLineOf(out, err)))
		} else {
			fmt.Fprintf(d.w, "  removed %d container(s) of host %s\n", len(ids), d.hostID)
		}
	}
	if d.image2Tagged {
		if out, err := exec.CommandContext(ctx, "docker", "rmi", d.image2).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("untag %s: %s", d.image2, oneLineOf(out, err)))
		}
	}
	if d.keep {
		fmt.Fprintf(d.w, "  kept %s (agent log: %s)\n", d.dir, d.devLog)
	} else if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(d.w, "  removed %s\n", d.dir)
	}
	return errors.Join(errs...)
}

func (d *demo) heading(s string) {
	d.stepN++
	fmt.Fprintf(d.w, "\n== %d. %s ==\n", d.stepN, s)
}

// cli runs one of this program's commands against the demo database and
// returns its standard output.
func (d *demo) cli(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.self, args...)
	cmd.Env = append(demoDevEnv(), "RTM_DATABASE_URL="+d.url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("rtmanager %s: %s", strings.Join(args, " "), oneLineOf(stderr.Bytes(), err))
	}
	return out, nil
}

// show prints a command and its output.
func (d *demo) show(ctx context.Context, args ...string) error {
	fmt.Fprintf(d.w, "\n$ rtmanager %s\n", strings.Join(args, " "))
	out, err := d.cli(ctx, args...)
	if err != nil {
		return err
	}
	_, err = d.w.Write(out)
	return err
}

// showState prints the host's records and the events since the last look.
func (d *demo) showState(ctx context.Context) error {
	if err := d.show(ctx, "records", "list", "--host", d.hostID); err != nil {
		return err
	}
	return d.show(ctx, "events", "tail", "--consumer", d.consumer)
}

func (d *demo) docker(ctx context.Context, args ...string) error {
	fmt.Fprintf(d.w, "$ docker %s\n", strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker %s: %s", strings.Join(args, " "), oneLineOf(out, err))
	}
	_, err = d.w.Write(out)
	return err
}

// enqueue enqueues a job with a fresh traceparent and prints it.
func (d *demo) enqueue(ctx context.Context, game, kind, payload string) (rtmclient.Job, error) {
	traceID := randomHex(16)
	tp := "00-" + traceID + "-" + randomHex(8) + "-01"
	args := []string{"jobs", "enqueue", "--host", d.hostID, "--game", game, "--kind", kind, "--payload", payload, "--traceparent", tp}
	fmt.Fprintf(d.w, "$ rtmanager jobs enqueue --host %s --game %s --kind %s --payload '%s' --traceparent %s\n", d.hostID, game, kind, payload, tp)
	out, err := d.cli(ctx, append(args, "-o", "json")...)
	if err != nil {
		return rtmclient.Job{}, err
	}
	var j rtmclient.Job
	if err := json.Unmarshal(out, &j); err != nil {
		return rtmclient.Job{}, fmt.Errorf("jobs enqueue printed no job: %w: %s", err, out)
	}
	if j.Traceparent != tp {
		return j, fmt.Errorf("job %d was stored with traceparent %q, not %q", j.ID, j.Traceparent, tp)
	}
	fmt.Fprintf(d.w, "  enqueued job %d (trace %s)\n", j.ID, traceID)
	d.jobs = append(d.jobs, demoJob{id: j.ID, game: game, kind: kind, traceID: traceID, status: string(j.Status)})
	return j, nil
}

// waitFor polls cond until it holds, and fails after the step timeout
// with what it saw last.
func (d *demo) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, string, error)) error {
	fmt.Fprintf(d.w, "  waiting for %s ... ", what)
	start := time.Now()
	deadline := start.Add(d.stepTimeout)
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	var last string
	for {
		ok, state, err := cond(ctx)
		if ok && err == nil {
			fmt.Fprintf(d.w, "ok (%s)\n", time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if sw := (stopWaiting{}); errors.As(err, &sw) {
			fmt.Fprintln(d.w, "FAILED")
			return fmt.Errorf("step %d did not happen: %s: %w", d.stepN, what, sw.error)
		}
		if err != nil {
			last = err.Error()
		} else {
			last = state
		}
		select {
		case <-d.devDone:
			fmt.Fprintln(d.w, "the agent exited")
			return fmt.Errorf("the agent exited (%v) while waiting for %s; the end of its log:\n%s", d.devErr, what, tailFile(d.devLog, 15))
		case <-ctx.Done():
			fmt.Fprintln(d.w, "interrupted")
			return ctx.Err()
		case <-ticker.C:
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(d.w, "TIMED OUT")
			return fmt.Errorf("step %d did not happen within %s: %s; last seen: %s", d.stepN, d.stepTimeout, what, last)
		}
	}
}

// jobsSucceeded reports whether every job enqueued so far succeeded; a
// job that ended otherwise fails the demo at once.
func (d *demo) jobsSucceeded(ctx context.Context) (bool, string, error) {
	for i := range d.jobs {
		j := &d.jobs[i]
		if j.status == string(rtmclient.JobSucceeded) {
			continue
		}
		out, err := d.cli(ctx, "jobs", "show", fmt.Sprint(j.id), "-o", "json")
		if err != nil {
			return false, "", err
		}
		var got rtmclient.Job
		if err := json.Unmarshal(out, &got); err != nil {
			return false, "", fmt.Errorf("jobs show %d: %w", j.id, err)
		}
		j.status = string(got.Status)
		switch got.Status {
		case rtmclient.JobSucceeded:
			continue
		case rtmclient.JobFailed, rtmclient.JobCancelled:
			return false, "", stopWaiting{fmt.Errorf("job %d (%s %s) ended %s: %s", j.id, j.kind, j.game, got.Status, got.LastError)}
		}
		state := fmt.Sprintf("job %d (%s %s) %s, attempt %d", j.id, j.kind, j.game, got.Status, got.Attempt)
		if got.LastError != "" {
			state += ": " + got.LastError
		}
		return false, state, nil
	}
	return true, "", nil
}

// stopWaiting marks an error after which waiting longer cannot help.
type stopWaiting struct{ error }

func (d *demo) records(ctx context.Context) (map[string]rtmclient.Record, error) {
	out, err := d.cli(ctx, "records", "list", "--host", d.hostID, "-o", "json")
	if err != nil {
		return nil, err
	}
	var rs []rtmclient.Record
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("records list: %w", err)
	}
	m := make(map[string]rtmclient.Record, len(rs))
	for _, r := range rs {
		m[r.GameID] = r
	}
	return m, nil
}

func (d *demo) record(ctx context.Context, game string) (rtmclient.Record, error) {
	out, err := d.cli(ctx, "records", "show", game, "-o", "json")
	if err != nil {
		return rtmclient.Record{}, err
	}
	var r rtmclient.Record
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("records show %s: %w", game, err)
	}
	return r, nil
}

// events returns the outbox's events, oldest first.
func (d *demo) events(ctx context.Context) ([]rtmclient.Event, error) {
	out, err := d.cli(ctx, "events", "tail", "-n", "10000", "-o", "json")
	if err != nil {
		return nil, err
	}
	var evs []rtmclient.Event
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var ev rtmclient.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("events tail: %w", err)
		}
		evs = append(evs, ev)
	}
	return evs, sc.Err()
}

// findEvent returns the game's runtime event of type typ with reason,
// about container id, or nil.
func (d *demo) findEvent(ctx context.Context, game string, typ rtmclient.EventType, reason, containerID string) (*rtmclient.Event, error) {
	evs, err := d.events(ctx)
	if err != nil {
		return nil, err
	}
	for i := range evs {
		ev := &evs[i]
		if ev.GameID != game || ev.Type != typ {
			continue
		}
		p, err := ev.RuntimePayload()
		if err != nil {
			return nil, err
		}
		if string(p.Reason) == reason && p.ContainerID == containerID {
			return ev, nil
		}
	}
	return nil, nil
}

// containers returns the ids of the containers named galaxy-game-{game}.
func (d *demo) containers(ctx context.Context, game string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--no-trunc", "--filter", "name=^galaxy-game-"+game+"$").Output()
	if err != nil {
		return nil, fmt.Errorf("docker ps: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// containerRunning asks Docker whether the game's container id runs.
func (d *demo) containerRunning(ctx context.Context, game, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	out, err := exec.CommandContext(ctx, "docker", "inspect", "--format", "{{.State.Running}} {{.Name}}", id).Output()
	if err != nil {
		return false, fmt.Errorf("docker inspect %s: %w", id, err)
	}
	f := strings.Fields(string(out))
	return len(f) == 2 && f[0] == "true" && f[1] == "/galaxy-game-"+game, nil
}

func (d *demo) summary(ctx context.Context) error {
	d.heading("What happened")
	if err := d.show(ctx, "jobs", "list", "--host", d.hostID); err != nil {
		return err
	}
	fmt.Fprintf(d.w, "\n$ docker ps -a --filter label=%s=%s\n", engine.LabelHost, d.hostID)
	out, err := exec.CommandContext(ctx, "docker", "ps", "-a", "--filter", "label="+engine.LabelHost+"="+d.hostID,
		"--format", "table {{.Names}}\t{{.Image}}\t{{.Status}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker ps: %s", oneLineOf(out, err))
	}
	_, _ = d.w.Write(out)

	A, B, C := d.games[0], d.games[1], d.games[2]
	fmt.Fprintf(d.w, "\nIn %s:\n", time.Since(d.startedPlaying).Round(time.Second))
	fmt.Fprintf(d.w, "  %-14s started; killed with docker kill -> %s; removed by a job: the record stays, terminal\n", A, d.kill)
	fmt.Fprintf(d.w, "  %-14s started; stopped by a job: the container is kept until the sweep's TTL\n", B)
	fmt.Fprintf(d.w, "  %-14s started; moved to %s by a job: new container, same state directory\n", C, d.image2)
	fmt.Fprintln(d.w, "\nThe jobs' trace ids (the agent's spans continue them; export the spans with")
	fmt.Fprintln(d.w, "OTEL_TRACES_EXPORTER=otlp and OTEL_EXPORTER_OTLP_ENDPOINT set for `rtmanager dev`):")
	for _, j := range d.jobs {
		fmt.Fprintf(d.w, "  job %-4d %-13s %-14s %-10s trace %s\n", j.id, j.kind, j.game, j.status, j.traceID)
	}
	fmt.Fprintln(d.w, "\nEvery step happened as printed.")
	if strings.HasPrefix(d.consoleURL, "http") {
		fmt.Fprintf(d.w, "\nThe operator console showed all of it live at %s (it stops with the demo).\n", d.consoleURL)
	}
	fmt.Fprintln(d.w, "See it for yourself: run `bin/rtmanager dev`, start games as its banner says, and open")
	fmt.Fprintln(d.w, "the console it prints (http://127.0.0.1:9465): the fleet, every game's timeline, the jobs")
	fmt.Fprintln(d.w, "with cancel and retry, and the activity charts. `rtmanager console` serves it for any database.")
	return nil
}

func parseBanner(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		for _, key := range []string{"database", "http", "console", "engine image", "host id"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), key+" "); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					m[key] = f[0]
				}
			}
		}
	}
	return m
}

// demoDevEnv is the environment of the demo's agent and commands: this
// one without the RTM_* settings that would point the agent elsewhere.
func demoDevEnv() []string {
	keep := map[string]bool{"RTM_PG_BIN_DIR": true, "RTM_DOCKER_HOST": true, "RTM_LOG_LEVEL": true, "RTM_LOG_FORMAT": true}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "RTM_") && !keep[name] {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func describeRecord(r rtmclient.Record, ok bool) string {
	if !ok {
		return "none yet"
	}
	s := string(r.Status)
	if r.CurrentImageRef != "" {
		s += " on " + r.CurrentImageRef
	}
	if r.CurrentContainerID != "" {
		s += " in " + clip(r.CurrentContainerID, 12)
	}
	return s
}

func exitOf(ev *rtmclient.Event) string {
	p, err := ev.RuntimePayload()
	if err != nil || p.ExitCode == nil {
		return ""
	}
	return fmt.Sprintf(", exit %d", *p.ExitCode)
}

func oneLineOf(out []byte, err error) string {
	if s := strings.Join(strings.Fields(string(out)), " "); s != "" {
		return s
	}
	return err.Error()
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// traversableByAll reports whether every directory from / down to dir
// lets other users through.
func traversableByAll(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
