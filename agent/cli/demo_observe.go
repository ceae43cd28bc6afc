// What the demo does and looks at: the operator commands it runs, the jobs
// it enqueues and the conditions it waits on.

package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/rtmclient"
)

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
