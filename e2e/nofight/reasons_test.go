package nofight_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// step is one job of a game's script and the runtime event it must
// produce, whoever records it first: "from->to(reason)", "" for none.
type step struct {
	kind    job.Kind
	payload string
	want    string
	// container: "new" when the event must name another container than the
	// game's previous event, "same" when the same one.
	container string
}

// runScripts enqueues every game's script at once (the jobs of a game run
// one after the other, the games side by side, so the watcher keeps
// seeing a job's events while the game's next job is already in
// progress), waits for every job to succeed and returns the job ids by
// game.
func runScripts(a *host, timeout time.Duration, scripts map[string][]step) map[string][]int64 {
	a.t.Helper()
	ids := map[string][]int64{}
	var all []int64
	longest := 0
	for _, s := range scripts {
		longest = max(longest, len(s))
	}
	for i := range longest {
		for game, s := range scripts {
			if i < len(s) {
				id := a.insert(game, s[i].kind, s[i].payload)
				ids[game] = append(ids[game], id)
				all = append(all, id)
			}
		}
	}
	a.waitSucceeded(timeout, all)
	return ids
}

// render is an event as the expected sequences spell it.
func render(ev event) string {
	if ev.rt.ToStatus == "" {
		return fmt.Sprintf("%s(job %d)", ev.Type, ev.JobID)
	}
	s := fmt.Sprintf("%s->%s(%s", ev.rt.FromStatus, ev.rt.ToStatus, ev.rt.Reason)
	if ev.rt.JobID != nil {
		s += fmt.Sprintf(" job %d", *ev.rt.JobID)
	}
	return s + ")"
}

// wantEvent is the runtime event of job id as render spells it.
func wantEvent(want string, id int64) string {
	if !strings.HasSuffix(want, ")") || !strings.Contains(want, "(job_") {
		return want
	}
	return fmt.Sprintf("%s job %d)", strings.TrimSuffix(want, ")"), id)
}

// checkEvent checks what render does not show: the payload's job fields
// agree with its reason and the row, a stop's exit code is there, no OOM
// was made up, and the container is the one the step says.
func checkEvent(t *testing.T, game string, ev event, s step, prevContainer string) {
	t.Helper()
	p := ev.rt
	if p.Reason.IsJob() != p.RequestedByJob || p.Reason.IsJob() != (p.JobID != nil) || (p.JobID != nil && *p.JobID != ev.JobID) {
		t.Errorf("game %s: %s: requested_by_job %v, job_id %v, row job %d", game, ev, p.RequestedByJob, p.JobID, ev.JobID)
	}
	if p.ToStatus == "stopped" && p.ExitCode == nil {
		t.Errorf("game %s: %s without an exit code", game, ev)
	}
	if p.OOM {
		t.Errorf("game %s: %s reports an OOM kill", game, ev)
	}
	switch {
	case s.container == "new" && (p.ContainerID == "" || p.ContainerID == prevContainer):
		t.Errorf("game %s: %s names container %.12s; want a new one (previous %.12s)", game, ev, p.ContainerID, prevContainer)
	case s.container == "same" && p.ContainerID != prevContainer:
		t.Errorf("game %s: %s names container %.12s; want the same as before, %.12s", game, ev, p.ContainerID, prevContainer)
	}
}

// TestReasonsOfEveryJobKind runs every job kind many times, with the events
// watcher and a reconciler (every 20 ms) running beside the jobs, and checks
// the whole outbox of every game: each job's change is one event with the
// job's reason and id, followed by the job's outcome, every time —
// whichever of the job and the watcher recorded it.
func TestReasonsOfEveryJobKind(t *testing.T) {
	a := startAgent(t, agentOptions{ReconcileInterval: 20 * time.Millisecond})
	imageB := tagImage(t, a.host)
	startA := fmt.Sprintf(`{"image_ref": %q}`, a.image)
	stop := step{job.KindStop, `{"timeout_seconds": 5}`, "running->stopped(job_stop)", "same"}
	restart := func(from string) step {
		return step{job.KindRestart, `{"timeout_seconds": 5}`, from + "->running(job_restart)", "same"}
	}
	script := func(g int) []step {
		s := []step{
			{job.KindStart, startA, "->running(job_start)", "new"},
			stop,
			{job.KindStart, startA, "stopped->running(job_start)", "same"},
			restart("running"),
			restart("running"),
			stop,
			restart("stopped"),
			{job.KindChangeImage, fmt.Sprintf(`{"image_ref": %q}`, imageB), "running->running(job_change_image)", "new"},
			stop,
			{job.KindChangeImage, startA, "stopped->running(job_change_image)", "new"},
		}
		// Half the games are removed running (one event: no stopped on
		// the way), half stopped.
		if g%2 == 1 {
			s = append(s, stop)
			return append(s, step{job.KindRemove, `{}`, "stopped->removed(job_remove)", "same"})
		}
		return append(s, step{job.KindRemove, `{}`, "running->removed(job_remove)", "same"})
	}
	const games = 12
	scripts := map[string][]step{}
	for g := range games {
		scripts[fmt.Sprintf("k%d-%s", g, a.suffix)] = script(g)
	}
	ids := runScripts(a.host, 5*time.Minute, scripts)

	perKind := map[job.Kind]int{}
	watcherFirst := map[job.Kind]int{}
	byGame := a.events()
	for game, s := range scripts {
		var want []string
		for i, st := range s {
			if st.want != "" {
				want = append(want, wantEvent(st.want, ids[game][i]))
			}
			want = append(want, fmt.Sprintf("job.succeeded(job %d)", ids[game][i]))
			perKind[st.kind]++
		}
		evs := byGame[game]
		var got []string
		for _, ev := range evs {
			got = append(got, render(ev))
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s:\n got %v\nwant %v", game, got, want)
			continue
		}
		// The sequences agree: event k of the game is step k's runtime
		// event or its outcome.
		prev, k := "", 0
		for i, st := range s {
			if st.want != "" {
				ev, outcome := evs[k], evs[k+1]
				checkEvent(t, game, ev, st, prev)
				prev = ev.rt.ContainerID
				if ev.Xid != outcome.Xid {
					watcherFirst[st.kind]++ // not committed with the job's outcome
				}
				k++
			}
			if evs[k].JobID != ids[game][i] {
				t.Fatalf("game %s: event %d is %s, want job %d's outcome", game, k, evs[k], ids[game][i])
			}
			k++
		}
	}
	for _, ev := range byGame[""] {
		t.Errorf("an event of no game: %s", ev)
	}
	t.Logf("jobs per kind %v; changes the watcher recorded before the job's commit, per kind %v", perKind, watcherFirst)
	// The race this is about took place: both writers recorded job changes.
	// (An image change is the job's alone: the record names the new
	// container only from the job's commit.)
	if total := watcherFirst[job.KindStop] + watcherFirst[job.KindRestart] + watcherFirst[job.KindRemove] + watcherFirst[job.KindStart]; total == 0 {
		t.Errorf("the watcher recorded no job's change first: the test did not exercise the race")
	}
	if watcherFirst[job.KindChangeImage] != 0 {
		t.Errorf("an image change recorded by someone else than its job: %d", watcherFirst[job.KindChangeImage])
	}
}

// TestReasonsOfCrashesDuringJobs: an engine that dies on its own, right
// after a start or a restart started it (while the job is in progress, or
// before its record names the container), is observed_die with its exit
// code — never the job's — and the job's own change is reported as
// usual. The game's next job is enqueued once the crash is recorded: a
// crash the watcher sees while the next job is in progress is judged
// against that job (the die of a game being removed is part of its
// removal).
func TestReasonsOfCrashesDuringJobs(t *testing.T) {
	a := startAgent(t, agentOptions{ReconcileInterval: 20 * time.Millisecond})
	crashing := fmt.Sprintf(`{"image_ref": %q, "env": {"ENGINE_EXIT_AFTER": "0s", "ENGINE_EXIT_CODE": "3"}}`, a.image)
	const died = "running->stopped(observed_die)"
	steps := []step{
		{job.KindStart, crashing, "->running(job_start)", "new"},
		{job.KindRestart, `{}`, "stopped->running(job_restart)", "same"},
		{job.KindStart, crashing, "stopped->running(job_start)", "same"},
		{job.KindRemove, `{}`, "stopped->removed(job_remove)", "same"},
	}
	var games []string
	for g := range 5 {
		games = append(games, fmt.Sprintf("c%d-%s", g, a.suffix))
	}
	ids := map[string][]int64{}
	for _, st := range steps {
		var batch []int64
		for _, game := range games {
			id := a.insert(game, st.kind, st.payload)
			ids[game] = append(ids[game], id)
			batch = append(batch, id)
		}
		a.waitSucceeded(2*time.Minute, batch)
		want := runtime.StatusStopped
		if st.kind == job.KindRemove {
			want = runtime.StatusRemoved
		}
		wait.For(t, time.Minute, "every game "+string(want), func() bool {
			for _, game := range games {
				if r, err := a.store.GetRecord(a.ctx, game); err != nil || r.Status != want {
					return false
				}
			}
			return true
		})
	}
	byGame := a.events()
	for _, game := range games {
		// Each crash comes after its job's change. Where it lands against
		// the job's outcome depends on when it happened: after a new
		// container's start and after a restart it is recorded after the
		// commit (before, it is not the record's container yet, or looks
		// like the restart's own die); after a start of the same
		// container the watcher may record it first. So the runtime
		// events are compared alone, and each outcome after its change.
		var want []string
		for i, st := range steps {
			want = append(want, wantEvent(st.want, ids[game][i]))
			if st.kind != job.KindRemove {
				want = append(want, died)
			}
		}
		var got []string
		prev := ""
		outcomeAt := map[int64]int{}
		changeAt := map[int64]int{}
		for k, ev := range byGame[game] {
			if ev.rt.ToStatus == "" {
				outcomeAt[ev.JobID] = k
				continue
			}
			got = append(got, render(ev))
			if ev.rt.JobID != nil {
				changeAt[*ev.rt.JobID] = k
			}
			if ev.rt.Reason == outbox.ReasonObservedDie && (ev.rt.ExitCode == nil || *ev.rt.ExitCode != 3 || ev.rt.ContainerID != prev) {
				t.Errorf("game %s: crash %s: exit code %v, container %.12s (want 3, %.12s)", game, ev, ev.rt.ExitCode, ev.rt.ContainerID, prev)
			}
			prev = ev.rt.ContainerID
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s: runtime events\n got %v\nwant %v", game, got, want)
			continue
		}
		for i, st := range steps {
			id := ids[game][i]
			if outcomeAt[id] <= changeAt[id] {
				t.Errorf("game %s: job %d (%s): outcome at %d, change at %d", game, id, st.kind, outcomeAt[id], changeAt[id])
			}
			if i == 0 || st.kind == job.KindRestart {
				// [change, outcome, crash]: fully ordered.
				if evs := byGame[game]; outcomeAt[id] != changeAt[id]+1 || render(evs[outcomeAt[id]+1]) != died {
					t.Errorf("game %s: job %d (%s): events %v; want its change, its outcome, then the crash", game, id, st.kind, evs)
				}
			}
		}
	}
}

// failFirstAttempt wraps an executor so that the first attempt of every job
// does its work on Docker and then fails before its commit, as an attempt
// whose agent dies there: the job is queued again, and its change is
// still its own.
func failFirstAttempt(exec worker.Executor) worker.Executor {
	return worker.ExecutorFunc(func(ctx context.Context, t worker.Task) (worker.Result, error) {
		res, err := exec.Execute(ctx, t)
		if err == nil && t.Job.Attempt == 1 {
			return worker.Result{}, errors.New("injected: the attempt stops before its commit")
		}
		return res, err
	})
}

// TestReasonsOfRetriedJobs: a job whose first attempt changed the container
// and failed before its commit is still the game's job in progress while it
// waits for its next attempt: the watcher reports the change it sees as
// the job's, the reconciler (every 20 ms) leaves the game alone, and the
// retry finds nothing left to do or records the same change. One event
// per job, with its reason and id. (A retried restart restarts the engine
// again; it is left out: it may report one restart or two.)
func TestReasonsOfRetriedJobs(t *testing.T) {
	a := startAgent(t, agentOptions{ReconcileInterval: 20 * time.Millisecond, Wrap: failFirstAttempt})
	imageB := tagImage(t, a.host)
	startA := fmt.Sprintf(`{"image_ref": %q}`, a.image)
	stop := step{job.KindStop, `{"timeout_seconds": 5}`, "running->stopped(job_stop)", "same"}
	scripts := map[string][]step{}
	for g := range 4 {
		scripts[fmt.Sprintf("r%d-%s", g, a.suffix)] = []step{
			{job.KindStart, startA, "->running(job_start)", "new"},
			stop,
			{job.KindStart, startA, "stopped->running(job_start)", "same"},
			{job.KindChangeImage, fmt.Sprintf(`{"image_ref": %q}`, imageB), "running->running(job_change_image)", "new"},
			stop,
			{job.KindRemove, `{}`, "stopped->removed(job_remove)", "same"},
		}
	}
	ids := runScripts(a.host, 3*time.Minute, scripts)
	byGame := a.events()
	for game, s := range scripts {
		var want []string
		for i, st := range s {
			want = append(want, wantEvent(st.want, ids[game][i]), fmt.Sprintf("job.succeeded(job %d)", ids[game][i]))
		}
		var got []string
		prev, k := "", 0
		for _, ev := range byGame[game] {
			got = append(got, render(ev))
			if ev.rt.ToStatus != "" && k < len(s) {
				checkEvent(t, game, ev, s[k], prev)
				prev = ev.rt.ContainerID
				k++
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s:\n got %v\nwant %v", game, got, want)
		}
		for i, id := range ids[game] {
			if j, err := a.store.GetJob(a.ctx, id); err != nil || j.Attempt != 2 {
				t.Errorf("game %s: job %d (%s): attempt %d, %v; want it done on its second attempt", game, id, s[i].kind, j.Attempt, err)
			}
		}
	}
}

// TestReasonsSurviveAnAgentRestart: an agent does each game's job on Docker
// and stops before its commit, with no events watcher of its own; a new
// agent, with none of its predecessor's memory, then sees the changes —
// in its relist, in the events it replays from the host's cursor, and in
// the jobs' next attempts. Each change is still its job's, with the job's
// reason and id: the job in progress is read from the job table.
func TestReasonsSurviveAnAgentRestart(t *testing.T) {
	h := newHost(t)
	imageB := tagImage(t, h)
	startA := fmt.Sprintf(`{"image_ref": %q}`, h.image)
	g := func(name string) string { return name + "-" + h.suffix }
	before := map[string][]step{
		g("stop"):   {{job.KindStart, startA, "->running(job_start)", "new"}},
		g("remove"): {{job.KindStart, startA, "->running(job_start)", "new"}},
		g("image"):  {{job.KindStart, startA, "->running(job_start)", "new"}},
		g("start"): {{job.KindStart, startA, "->running(job_start)", "new"},
			{job.KindStop, `{}`, "running->stopped(job_stop)", "same"}},
	}
	after := map[string]step{
		g("stop"):   {job.KindStop, `{}`, "running->stopped(job_stop)", "same"},
		g("remove"): {job.KindRemove, `{}`, "running->removed(job_remove)", "same"},
		g("image"):  {job.KindChangeImage, fmt.Sprintf(`{"image_ref": %q}`, imageB), "running->running(job_change_image)", "new"},
		g("start"):  {job.KindStart, startA, "stopped->running(job_start)", "same"},
	}
	a1 := h.start(agentOptions{ReconcileInterval: time.Hour})
	ids := runScripts(h, 2*time.Minute, before)
	a1.stop()

	// The agent that stops before its commits.
	var (
		mu      sync.Mutex
		worked  = map[int64]error{}
		workedN = func() int { mu.Lock(); defer mu.Unlock(); return len(worked) }
	)
	a2 := h.start(agentOptions{WorkerOnly: true, Wrap: func(exec worker.Executor) worker.Executor {
		return worker.ExecutorFunc(func(ctx context.Context, task worker.Task) (worker.Result, error) {
			_, err := exec.Execute(ctx, task)
			mu.Lock()
			worked[task.Job.ID] = err
			mu.Unlock()
			<-ctx.Done() // until the agent stops
			return worker.Result{}, ctx.Err()
		})
	}})
	for game, st := range after {
		ids[game] = append(ids[game], h.insert(game, st.kind, st.payload))
	}
	wait.For(t, 2*time.Minute, "every job's work done on Docker", func() bool { return workedN() == len(after) })
	a2.stop()
	for game := range after {
		id := ids[game][len(ids[game])-1]
		if err := worked[id]; err != nil {
			t.Fatalf("game %s: job %d failed on its first run: %v", game, id, err)
		}
		if j, err := h.store.GetJob(h.ctx, id); err != nil || j.Status != job.StatusQueued || j.StartedAt == nil {
			t.Fatalf("game %s: job %d after its agent stopped: %+v, %v; want queued again", game, id, j, err)
		}
	}

	// The new agent. Its watcher and reconciler first: the relists (when
	// it subscribes, and one more here) leave the games to their jobs, and
	// the events replayed from the host's cursor are the jobs' (the
	// daemon's ring is shared with other tests: some may be gone).
	a3 := h.start(agentOptions{ReconcileInterval: time.Hour, NoWorker: true})
	rep, err := a3.rec.Pass(h.ctx, "test")
	if err != nil || rep.Repairs() != 0 || rep.Skipped < 2 {
		// Whatever the replay recorded already, the image change's game
		// is skipped twice: its record's (old) container has exited, and
		// its new container is in its job's hands.
		t.Errorf("relist while the jobs wait for their next attempts: %+v, %v; want no repair", rep, err)
	}
	// Then its job worker.
	h.start(agentOptions{WorkerOnly: true})
	var last []int64
	for game := range after {
		last = append(last, ids[game][len(ids[game])-1])
	}
	h.waitSucceeded(2*time.Minute, last)
	byGame := h.events()
	for game, st := range after {
		s := append(before[game], st)
		var want, got []string
		for i, st := range s {
			want = append(want, wantEvent(st.want, ids[game][i]), fmt.Sprintf("job.succeeded(job %d)", ids[game][i]))
		}
		prev, k := "", 0
		for _, ev := range byGame[game] {
			got = append(got, render(ev))
			if ev.rt.ToStatus != "" && k < len(s) {
				checkEvent(t, game, ev, s[k], prev)
				prev = ev.rt.ContainerID
				k++
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("game %s:\n got %v\nwant %v", game, got, want)
		}
	}
}

// tagImage gives the test engine image a second tag, for image changes.
func tagImage(t *testing.T, a *host) string {
	t.Helper()
	cli := dockertest.Client(t)
	ref := dockertest.ImageRepo + ":" + a.hostID
	if _, err := cli.ImageTag(a.ctx, client.ImageTagOptions{Source: a.image, Target: ref}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{}) })
	return ref
}
