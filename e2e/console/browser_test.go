// Package console_test drives the operator console in a real browser
// (headless Chromium through the DevTools protocol) against a real
// database, a real agent and real containers: the fleet page, filtering
// games, a game's timeline, a new event arriving live, cancelling a job
// with and without the token, and hostile content that must not execute.
//
// Screenshots of every page are written to a temporary directory when a
// test fails, and to $RTM_CONSOLE_SCREENSHOTS when it is set (the README's
// pictures come from there).
package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/agentbin"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/rtmclient"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const token = "e2e-console-token-0123456789"

// chromium finds the browser: Skip without one, except under CI.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("RTM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is required in CI (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH: apt-get install chromium, or set RTM_CHROMIUM")
	return ""
}

// browser is one headless Chromium tab and what it saw.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	dialogs []string // alert/confirm/prompt: hostile content executed
	console []string // console messages and uncaught exceptions
	shots   []shot
}

type shot struct {
	name string
	png  []byte
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, string(m.Type)+": "+m.Text)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			b.writeShots("")
			b.mu.Lock()
			t.Logf("browser console: %q", b.console)
			b.mu.Unlock()
		}
		if dir := os.Getenv("RTM_CONSOLE_SCREENSHOTS"); dir != "" {
			b.writeShots(dir)
		}
		cancelCtx()
		cancelAlloc()
	})
	return b
}

// writeShots writes the screenshots to dir, or to a new temporary
// directory when dir is empty.
func (b *browser) writeShots(dir string) {
	if dir == "" {
		d, err := os.MkdirTemp("", "rtm-console-shots-")
		if err != nil {
			b.t.Logf("screenshots: %v", err)
			return
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshots: %v", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.shots {
		if err := os.WriteFile(filepath.Join(dir, s.name+".png"), s.png, 0o644); err != nil {
			b.t.Logf("screenshot %s: %v", s.name, err)
		}
	}
	b.t.Logf("screenshots of %d pages in %s", len(b.shots), dir)
}

// do runs actions with a deadline, failing the test with what was done.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot("failed-" + strings.NewReplacer(" ", "-", "/", "_", "?", "_").Replace(what))
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// submit runs actions that navigate (a click on a form's button) and
// waits for the new document's response.
func (b *browser) submit(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(ctx, actions...); err != nil {
		b.screenshot("failed-" + strings.NewReplacer(" ", "-", "/", "_", "?", "_").Replace(what))
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// get runs one action that returns a value.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.screenshot("failed-" + strings.NewReplacer(" ", "-", "/", "_", "?", "_").Replace(what))
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

func eval[T any](b *browser, js string) T {
	b.t.Helper()
	return get(b, "evaluate "+js, chromedp.Evaluate[T](js))
}

// poll waits until the expression is true in the page.
func (b *browser) poll(what, js string) {
	b.t.Helper()
	get(b, what, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(time.Minute)))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return get(b, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// screenshot keeps a picture of the page as it is now.
func (b *browser) screenshot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.mu.Lock()
	b.shots = append(b.shots, shot{name, png})
	b.mu.Unlock()
}

func (b *browser) noDialogs() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) > 0 {
		b.t.Fatalf("hostile content executed: dialogs %q", b.dialogs)
	}
}

// fleet is the world the browser looks at: an agent on a host of its
// own, its database, and the console.
type fleet struct {
	t       *testing.T
	hostID  string
	image   string
	pool    *pgxpool.Pool
	client  *rtmclient.Client
	agent   *proc
	console string
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	chromium(t) // skip before the slow part when there is no browser
	image := dockertest.EngineImage(t)
	hostID := dockertest.UniqueName(t)
	dockertest.Engine(t, hostID)
	bin := agentbin.Build(t)
	dbURL := pgtest.URL(t)
	pool, err := db.Connect(context.Background(), dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	agent := start(t, "rtmanager run", bin, map[string]string{
		"RTM_DATABASE_URL": dbURL, "RTM_HOST_ID": hostID, "RTM_DOCKER_NETWORK": "net-" + hostID,
		"RTM_STATE_ROOT": t.TempDir(), "RTM_ALLOWED_IMAGES": dockertest.ImageRepo,
		"RTM_POLL_INTERVAL": "200ms", "RTM_DRAIN_TIMEOUT": "5s", "RTM_HEARTBEAT_INTERVAL": "2s",
	}, "run", "--http-addr=")
	_, url := startConsole(t, bin, map[string]string{
		"RTM_DATABASE_URL": dbURL, "RTM_CONSOLE_ACTIONS": "true", "RTM_CONSOLE_TOKEN": token,
		"RTM_CONSOLE_TRACE_URL": "http://tempo.invalid/trace/{trace_id}", "RTM_CONSOLE_DOWN_AFTER": "30s",
	})
	return &fleet{t: t, hostID: hostID, image: image, pool: pool, client: rtmclient.New(pool), agent: agent, console: url}
}

// traceID is the trace every job of the test is enqueued in, as the Game
// Master's span would give it.
const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

func (f *fleet) enqueue(game string, p rtmclient.Payload, runAfter time.Time) rtmclient.Job {
	f.t.Helper()
	tid, _ := trace.TraceIDFromHex(traceID)
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	j, _, err := f.client.Enqueue(ctx, f.pool, rtmclient.JobRequest{HostID: f.hostID, GameID: game, Payload: p, RunAfter: runAfter})
	if err != nil {
		f.t.Fatalf("enqueue %s for %s: %v", p.Kind(), game, err)
	}
	return j
}

func (f *fleet) waitJob(id int64, want rtmclient.JobStatus) {
	f.t.Helper()
	wait.ForErr(f.t, 2*time.Minute, fmt.Sprintf("job %d to be %s", id, want), func() (bool, error) {
		if !f.agent.alive() {
			f.t.Fatalf("the agent exited:\n%s", f.agent.output())
		}
		j, err := f.client.GetJob(context.Background(), id)
		if err != nil {
			return false, err
		}
		if j.Status.IsFinal() && j.Status != want {
			f.t.Fatalf("job %d ended %s (%s), want %s", id, j.Status, j.LastError, want)
		}
		return j.Status == want, fmt.Errorf("it is %s", j.Status)
	})
}

func (f *fleet) jobStatus(id int64) rtmclient.JobStatus {
	f.t.Helper()
	j, err := f.client.GetJob(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return j.Status
}

// TestConsoleInBrowser walks an operator's night through the console.
func TestConsoleInBrowser(t *testing.T) {
	f := newFleet(t)
	b := newBrowser(t)
	suffix := f.hostID[len(f.hostID)-8:]
	games := []string{"alpha-" + suffix, "bravo-" + suffix}
	var starts []rtmclient.Job
	for _, g := range games {
		starts = append(starts, f.enqueue(g, rtmclient.StartPayload{ImageRef: f.image}, time.Time{}))
	}
	for _, j := range starts {
		f.waitJob(j.ID, rtmclient.JobSucceeded)
	}
	// A job for a host that never had an agent: the host shows as never
	// seen, its job waiting.
	ghost, _, err := f.client.Enqueue(context.Background(), f.pool, rtmclient.JobRequest{HostID: "ghost-" + suffix, GameID: "ghost-" + suffix,
		Payload: rtmclient.StartPayload{ImageRef: f.image}})
	if err != nil {
		t.Fatal(err)
	}

	// Fleet: the host is up with its two running games.
	b.do("open the fleet page", chromedp.Navigate(f.console+"/"), chromedp.WaitVisible(chromedp.CSS(`#hosts`)))
	row := fmt.Sprintf(`tr[data-host=%q]`, f.hostID)
	if txt := b.text(row); !strings.Contains(txt, "up") || !strings.Contains(txt, "since") {
		t.Errorf("the fleet row of %s: %q", f.hostID, txt)
	}
	if running := b.text(row + ` td:nth-child(9)`); strings.TrimSpace(running) != "2" {
		t.Errorf("the host's running games: %q, want 2", running)
	}
	if txt := b.text(fmt.Sprintf(`tr[data-host=%q]`, ghost.HostID)); !strings.Contains(txt, "never seen") {
		t.Errorf("the ghost host's row: %q", txt)
	}
	b.screenshot("fleet")

	// Games: filter by host and status, then search by id.
	// A click on a form's button navigates: wait for the new document
	// (the old one has a games table too).
	loaded := func(what, query string) {
		b.t.Helper()
		if u := eval[string](b, `location.search`); !strings.Contains(u, query) {
			t.Fatalf("%s: the page is at %q", what, u)
		}
	}
	b.do("filter games by host",
		chromedp.Navigate(f.console+"/games"),
		chromedp.WaitVisible(chromedp.CSS(`#games-filter`)),
		chromedp.SetValue(chromedp.CSS(`#games-filter select[name=host]`), f.hostID),
		chromedp.SetValue(chromedp.CSS(`#games-filter select[name=status]`), "running"),
	)
	b.submit("apply the filter", chromedp.Click(chromedp.CSS(`#games-filter button[name=apply]`)))
	loaded("the filtered games", "status=running")
	listed := `Array.from(document.querySelectorAll('#games tr[data-game]')).map(r => r.dataset.game)`
	if shown := eval[[]string](b, listed); strings.Join(shown, ",") != strings.Join(games, ",") {
		t.Errorf("running games of %s: %q, want %q", f.hostID, shown, games)
	}
	if u := eval[string](b, `location.search`); !strings.Contains(u, "host="+f.hostID) {
		t.Errorf("the filter's URL: %q", u)
	}
	b.screenshot("games")
	b.do("search a game by id", chromedp.SetValue(chromedp.CSS(`#games-filter input[name=q]`), games[1][:4]))
	b.submit("apply the search", chromedp.Click(chromedp.CSS(`#games-filter button[name=apply]`)))
	loaded("the searched games", "q="+games[1][:4])
	if shown := eval[[]string](b, listed); len(shown) != 1 || shown[0] != games[1] {
		t.Errorf("search %q: %q", games[1][:4], shown)
	}

	// A game, reached from the list: its timeline has the start job, its
	// event and the job's outcome.
	game := games[0]
	b.do("open a game from the list",
		chromedp.Navigate(f.console+"/games?host="+f.hostID),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#games a[href="/games/%s"]`, game))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#games a[href="/games/%s"]`, game))),
		chromedp.WaitVisible(chromedp.CSS(`#timeline`)),
	)
	types := eval[[]string](b, `Array.from(document.querySelectorAll('#timeline li[data-type]')).map(li => li.dataset.type)`)
	if !contains(types, "runtime.running") || !contains(types, "job.succeeded") {
		t.Errorf("the timeline's events: %q", types)
	}
	if txt := b.text(fmt.Sprintf(`#timeline li[data-job="%d"]`, starts[0].ID)); !strings.Contains(txt, "start") || !strings.Contains(txt, "enqueued") || !strings.Contains(txt, "succeeded") {
		t.Errorf("the start job in the timeline: %q", txt)
	}
	// Its trace, linked through RTM_CONSOLE_TRACE_URL.
	if href := eval[string](b, fmt.Sprintf(`document.querySelector('#timeline li[data-job="%d"] .trace a').href`, starts[0].ID)); href != "http://tempo.invalid/trace/"+traceID {
		t.Errorf("the start job's trace link: %q", href)
	}

	// Live: a stop job's events appear without a reload.
	b.poll("the live stream to connect", `document.body.dataset.liveConnected === 'yes'`)
	eval[int](b, `window.__sameDocument = 42`)
	stop := f.enqueue(game, rtmclient.StopPayload{}, time.Time{})
	b.poll("the stop to arrive live",
		`document.querySelector('#timeline li[data-type="runtime.stopped"]') !== null && window.__sameDocument === 42`)
	f.waitJob(stop.ID, rtmclient.JobSucceeded)
	b.poll("the stop job's outcome to arrive live", fmt.Sprintf(
		`document.querySelector('#timeline li[data-job="%d"] [data-status="succeeded"]') !== null && window.__sameDocument === 42`, stop.ID))
	b.screenshot("game")

	// Cancel: a job due in an hour stays queued. Without the token the
	// button is refused; logged in, it cancels.
	later := f.enqueue(games[1], rtmclient.RestartPayload{}, time.Now().Add(time.Hour))
	jobPath := fmt.Sprintf("/jobs/%d", later.ID)
	b.do("cancel without logging in",
		chromedp.Navigate(f.console+jobPath),
		chromedp.WaitVisible(chromedp.CSS(`button[name=cancel]`)),
		chromedp.Click(chromedp.CSS(`button[name=cancel]`)),
		chromedp.WaitVisible(chromedp.CSS(`.problem`)),
	)
	if msg := b.text(`.problem h1`); !strings.Contains(msg, "401") || !strings.Contains(msg, "log in") {
		t.Errorf("cancel without a token says %q", msg)
	}
	if s := f.jobStatus(later.ID); s != rtmclient.JobQueued {
		t.Fatalf("the job is %s after a refused cancel", s)
	}
	b.do("log in with a wrong token",
		chromedp.Navigate(f.console+"/login?next="+jobPath),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), "not-the-token-not-the-token"),
		chromedp.Click(chromedp.CSS(`button[name=login]`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash.bad`)),
	)
	b.do("log in",
		chromedp.Navigate(f.console+"/login?next="+jobPath),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "night-operator"),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), token),
		chromedp.Click(chromedp.CSS(`button[name=login]`)),
		chromedp.WaitVisible(chromedp.CSS(`.acting`)),
	)
	if who := b.text(`.acting`); !strings.Contains(who, "night-operator") {
		t.Errorf("logged in as %q", who)
	}
	if u := eval[string](b, `location.pathname`); u != jobPath {
		t.Errorf("after login the browser is at %s, want %s", u, jobPath)
	}
	b.screenshot("job-queued")
	b.do("cancel",
		chromedp.Click(chromedp.CSS(`button[name=cancel]`)),
		chromedp.WaitVisible(chromedp.CSS(`#notice`)),
	)
	if s := f.jobStatus(later.ID); s != rtmclient.JobCancelled {
		t.Fatalf("the job is %s after cancel", s)
	}
	if st := b.text(`#job-status`); st != "cancelled" {
		t.Errorf("the page shows %q", st)
	}
	if n := eval[int](b, `document.querySelectorAll('button[name=cancel]').length`); n != 0 {
		t.Errorf("a cancelled job still has a cancel button")
	}

	// Jobs: the queued ghost job with its wait.
	b.do("open the jobs page", chromedp.Navigate(f.console+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`#jobs`)))
	if txt := b.text(fmt.Sprintf(`#jobs tr[data-job="%d"]`, ghost.ID)); !strings.Contains(txt, "queued") || !strings.Contains(txt, "waiting") {
		t.Errorf("the ghost job's row: %q", txt)
	}
	b.screenshot("jobs")
	b.do("open the activity page", chromedp.Navigate(f.console+"/activity"), chromedp.WaitVisible(chromedp.CSS(`#tail`)))
	if bars := eval[int](b, `document.querySelectorAll('figure.chart rect').length`); bars == 0 {
		t.Errorf("the activity charts draw no bar")
	}
	b.screenshot("activity")
	b.noDialogs()
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// hostile is markup, script links, attribute breakers and terminal
// escapes. Any of them executing opens a dialog or sets window.__pwned.
const hostile = `<script>alert("script")</script><img src=x onerror="window.__pwned=1;alert('img')">` +
	`"><svg onload=alert('svg')>' onmouseover='alert(1)' <a href="javascript:alert('link')">click</a> ` +
	"\x1b[31mRED\x1b[0m \x1b]0;owned\x07 \u202eevil"

// TestHostileContentDoesNotExecute writes hostile text where the Game
// Master (or anyone with the job table) can: a job's game id and payload,
// which the agent refuses with an error that quotes them, and a job's
// error and payload written directly. The browser renders every page
// that shows them; nothing may run.
func TestHostileContentDoesNotExecute(t *testing.T) {
	f := newFleet(t)
	b := newBrowser(t)
	ctx := context.Background()
	envJSON, _ := json.Marshal(map[string]any{"image_ref": f.image, "env": map[string]string{"X": hostile}, "state_dir": hostile})
	var refused, forged int64
	// Refused by the agent: its error names the hostile state_dir.
	if err := f.pool.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ($1, 'victim', 'start', $2) RETURNING id`,
		f.hostID, envJSON).Scan(&refused); err != nil {
		t.Fatal(err)
	}
	f.waitJob(refused, rtmclient.JobFailed)
	// Written as if by anyone with the table: the error itself hostile,
	// on a host no agent runs, and a hostile game id.
	if err := f.pool.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind, payload, status, attempt, last_error, finished_at, traceparent)
		VALUES ('nowhere', $1, $2, $3, 'failed', 1, $1, now(), $4) RETURNING id`,
		hostile, hostile, envJSON, `javascript:alert('trace')`).Scan(&forged); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `INSERT INTO outbox (type, host_id, game_id, job_id, payload) VALUES ('job.failed', 'nowhere', $1, $2, $3)`,
		hostile, forged, fmt.Sprintf(`{"job_id": %d, "kind": "start", "status": "failed", "error": %s}`, forged, jsonString(hostile))); err != nil {
		t.Fatal(err)
	}
	pages := []string{
		"/", "/jobs", "/jobs?status=failed", fmt.Sprintf("/jobs/%d", refused), fmt.Sprintf("/jobs/%d", forged),
		"/games/victim", "/activity", "/games?q=" + url.QueryEscape(hostile), "/games/" + url.PathEscape(hostile),
	}
	type pageState struct {
		Pwned    bool     `json:"pwned"`
		Scripts  []string `json:"scripts"`
		Imgs     int      `json:"imgs"`
		JSLinks  int      `json:"jsLinks"`
		Handlers int      `json:"handlers"`
	}
	for _, p := range pages {
		b.do("open "+p, chromedp.Navigate(f.console+p), chromedp.WaitReady(chromedp.CSS(`footer`)))
		b.poll("the page to load", `document.readyState === 'complete'`)
		st := eval[pageState](b, `({
			pwned: window.__pwned === 1,
			scripts: Array.from(document.scripts).map(s => s.src || 'inline:' + s.text),
			imgs: document.querySelectorAll('img').length,
			jsLinks: Array.from(document.querySelectorAll('a[href]')).filter(a => a.protocol === 'javascript:').length,
			handlers: Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
		})`)
		if st.Pwned || len(st.Scripts) != 1 || !strings.HasSuffix(st.Scripts[0], "/static/console.js") || st.Imgs != 0 || st.JSLinks != 0 || st.Handlers != 0 {
			t.Errorf("%s: hostile content became markup: %+v", p, st)
		}
		b.noDialogs()
	}
	// The hostile text is shown, as text, its escapes visible.
	b.do("open the forged job", chromedp.Navigate(fmt.Sprintf("%s/jobs/%d", f.console, forged)), chromedp.WaitVisible(chromedp.CSS(`#job-error`)))
	if txt := b.text(`#job-error`); !strings.Contains(txt, `<script>alert("script")</script>`) || !strings.Contains(txt, `\x1b[31mRED`) || !strings.Contains(txt, `\u202e`) {
		t.Errorf("the error is not shown as text: %q", txt)
	}
	if n := eval[int](b, `document.querySelectorAll('.trace a').length`); n != 0 {
		t.Errorf("a traceparent that is not one became a link")
	}
	b.screenshot("hostile-job")
	b.do("open the refused job", chromedp.Navigate(fmt.Sprintf("%s/jobs/%d", f.console, refused)), chromedp.WaitVisible(chromedp.CSS(`#job-error`)))
	if txt := b.text(`#job-error`); !strings.Contains(txt, "state_dir") {
		t.Errorf("the agent's refusal: %q", txt)
	}
	b.noDialogs()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
