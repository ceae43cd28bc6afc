package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
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
