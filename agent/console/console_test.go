package console_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/agent/console"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testToken = "0123456789abcdef-test-token"

// hostile is what a Game Master (or whoever writes the job table) could
// put in a job to attack the operator's browser or terminal.
const hostile = "<script>alert('xss')</script>\"><img src=x onerror=alert(1)> <a href=\"javascript:alert(2)\">x</a> \x1b[31mred\x1b[0m \u202egnp.exe"

func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := db.Connect(context.Background(), pgtest.URL(t), console.ConfigurePool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func exec(t *testing.T, p *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := p.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

// seed writes a small fleet: host-a live, host-b down, games on both, a
// failed job with hostile content, a queued job, and events.
func seed(t *testing.T, p *pgxpool.Pool) (queuedJob, failedJob int64) {
	t.Helper()
	exec(t, p, `INSERT INTO hosts (host_id, agent_id, agent_version, lease_expires_at) VALUES
		('host-a', 'agent-a', 'v1.2.3', now() + interval '1 minute'),
		('host-b', 'agent-b', 'v1.2.2', now() - interval '5 minutes')`)
	exec(t, p, `UPDATE hosts SET heartbeat_at = now() - interval '10 minutes' WHERE host_id = 'host-b'`)
	exec(t, p, `INSERT INTO runtime_records (game_id, host_id, status, current_container_id, current_image_ref,
		engine_endpoint, state_path, docker_network, started_at, stopped_at, last_op_at, created_at) VALUES
		('alpha', 'host-a', 'running', 'c0ffee000000aaaa', 'engine:1', 'http://galaxy-game-alpha:8080', '/s/alpha', 'galaxy', now(), NULL, now(), now()),
		('bravo', 'host-a', 'stopped', 'c0ffee000000bbbb', 'engine:1', 'http://galaxy-game-bravo:8080', '/s/bravo', 'galaxy', now() - interval '1 hour', now(), now(), now() - interval '1 hour'),
		('charlie', 'host-b', 'running', 'c0ffee000000cccc', 'engine:2', 'http://galaxy-game-charlie:8080', '/s/charlie', 'galaxy', now(), NULL, now(), now())`)
	ctx := context.Background()
	if err := p.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind, payload, status, attempt, last_error, finished_at, traceparent)
		VALUES ('host-a', 'alpha', 'start', $1, 'failed', 1, $2, now(), '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') RETURNING id`,
		fmt.Sprintf(`{"image_ref": "engine:1", "env": {"X": %s}}`, jsonString(hostile)), hostile).Scan(&failedJob); err != nil {
		t.Fatal(err)
	}
	if err := p.QueryRow(ctx, `INSERT INTO jobs (host_id, game_id, kind, payload, created_at) VALUES ('host-b', 'charlie', 'stop', '{}', now() - interval '3 minutes') RETURNING id`).Scan(&queuedJob); err != nil {
		t.Fatal(err)
	}
	exec(t, p, `INSERT INTO outbox (type, host_id, game_id, job_id, payload) VALUES
		('runtime.running', 'host-a', 'alpha', NULL, '{"game_id":"alpha","to_status":"running","reason":"job_start"}'),
		('runtime.stopped', 'host-a', 'alpha', NULL, '{"game_id":"alpha","from_status":"running","to_status":"stopped","reason":"observed_die","exit_code":137,"oom":true,"container_id":"c0ffee000000aaaa"}'),
		('job.failed', 'host-a', 'alpha', $1, $2)`, failedJob, fmt.Sprintf(`{"job_id": %d, "kind": "start", "status": "failed", "attempt": 1, "error": %s}`, failedJob, jsonString(hostile)))
	return queuedJob, failedJob
}

type harness struct {
	t    *testing.T
	p    *pgxpool.Pool
	srv  *httptest.Server
	http *http.Client
}

func newHarness(t *testing.T, opts console.Options) *harness {
	t.Helper()
	if opts.Pool == nil {
		opts.Pool = pool(t)
	}
	opts.PollInterval = 100 * time.Millisecond
	s, err := console.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(s.Handler())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunLive(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
		<-done
	})
	jar, _ := cookiejar.New(nil)
	return &harness{t: t, p: opts.Pool, srv: srv, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (h *harness) get(path string, header ...string) (int, string, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (h *harness) post(path string, form url.Values, header ...string) (int, string, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (h *harness) jobStatus(id int64) string {
	h.t.Helper()
	var s string
	if err := h.p.QueryRow(context.Background(), "SELECT status FROM jobs WHERE id = $1", id).Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func TestPages(t *testing.T) {
	h := newHarness(t, console.Options{DownAfter: time.Minute, TraceURL: "http://jaeger.example:16686/trace/{trace_id}"})
	_, failed := seed(t, h.p)
	for _, tc := range []struct {
		path  string
		wants []string
	}{
		{"/", []string{`data-host="host-a"`, `data-host="host-b"`, "hosts down", ">down<", ">up<", "v1.2.3"}},
		{"/games", []string{`data-game="alpha"`, `data-game="bravo"`, `data-game="charlie"`}},
		{"/games?host=host-b", []string{`data-game="charlie"`}},
		{"/games?status=stopped", []string{`data-game="bravo"`}},
		{"/games?q=ch", []string{`data-game="charlie"`}},
		{"/games/alpha", []string{`id="timeline"`, "runtime.stopped", "exit code <b>137</b>", "OOM killed",
			fmt.Sprintf(`data-job="%d"`, failed), `href="http://jaeger.example:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"`}},
		{"/jobs?status=queued", []string{"waiting 3m"}},
		{"/jobs?status=failed", []string{fmt.Sprintf(`data-job="%d"`, failed)}},
		{fmt.Sprintf("/jobs/%d", failed), []string{`id="job-error"`, `id="job-payload"`}},
		{"/activity", []string{"Jobs finished per minute", "Outbox events per minute", `<rect`, `id="tail"`}},
	} {
		code, body, hdr := h.get(tc.path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", tc.path, code, body)
			continue
		}
		mustContain(t, "GET "+tc.path, body, tc.wants...)
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: CSP %q", tc.path, csp)
		}
	}
	// Filters really filter.
	if _, body, _ := h.get("/games?host=host-b"); strings.Contains(body, `data-game="alpha"`) {
		t.Errorf("the host-b filter shows alpha")
	}
	if _, body, _ := h.get("/games?q=ch"); strings.Contains(body, `data-game="alpha"`) {
		t.Errorf("the search for ch shows alpha")
	}
	// The live region alone, for console.js.
	_, frag, _ := h.get("/games/alpha", "X-Console-Fragment", "1")
	if strings.Contains(frag, "<html") || !strings.Contains(frag, `id="timeline"`) {
		t.Errorf("the fragment is not the live region alone:\n%s", frag)
	}
	// Bad input is a clear 400, unknown ids a 404.
	for path, want := range map[string]int{
		"/games?status=exploded": http.StatusBadRequest, "/jobs?before=x": http.StatusBadRequest,
		"/games/nope": http.StatusNotFound, "/jobs/999999": http.StatusNotFound, "/activity?hours=0": http.StatusBadRequest,
	} {
		if code, body, _ := h.get(path); code != want {
			t.Errorf("GET %s: %d, want %d\n%s", path, code, want, body)
		}
	}
}

var rawMarkup = regexp.MustCompile(`(?i)<script>alert|<img src=x|href="javascript:|\x1b|\x{202e}`)

func TestHostileContentIsEscaped(t *testing.T) {
	h := newHarness(t, console.Options{DownAfter: time.Minute})
	_, failed := seed(t, h.p)
	for _, path := range []string{"/games/alpha", "/jobs", fmt.Sprintf("/jobs/%d", failed), "/activity"} {
		_, body, _ := h.get(path)
		if m := rawMarkup.FindString(body); m != "" {
			t.Errorf("GET %s renders %q unescaped", path, m)
		}
		mustContain(t, "GET "+path, body, "&lt;script&gt;")
		if path != "/activity" {
			mustContain(t, "GET "+path, body, `\x1b[31mred`)
		}
	}
}

func TestReadOnlyHasNoActions(t *testing.T) {
	h := newHarness(t, console.Options{DownAfter: time.Minute})
	queued, _ := seed(t, h.p)
	_, body, _ := h.get(fmt.Sprintf("/jobs/%d", queued))
	if strings.Contains(body, "/cancel") || strings.Contains(body, "Log in") {
		t.Errorf("a read-only console shows actions")
	}
	mustContain(t, "a read-only page", body, "read-only")
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", queued), nil, "Authorization", "Bearer "+testToken); code != http.StatusForbidden {
		t.Errorf("cancel on a read-only console: %d, want 403", code)
	}
	if s := h.jobStatus(queued); s != "queued" {
		t.Errorf("the job is %s", s)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestActionsNeedTokenAndCSRF(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, console.Options{DownAfter: time.Minute, Actions: true, Token: testToken, Logger: newLogger(&logs)})
	queued, failed := seed(t, h.p)
	cancel := fmt.Sprintf("/jobs/%d/cancel", queued)

	// Not logged in: the button shows, the action is refused.
	_, body, _ := h.get(fmt.Sprintf("/jobs/%d", queued))
	mustContain(t, "the job page", body, `action="`+cancel+`"`, "Log in to act")
	if code, _, _ := h.post(cancel, url.Values{"csrf": {"x"}}); code != http.StatusUnauthorized {
		t.Errorf("cancel without a session: %d, want 401", code)
	}
	// A wrong token does not log in.
	if code, _, hdr := h.post("/login", url.Values{"token": {"wrong-token-wrong-token"}, "name": {"mallory"}}); code != http.StatusUnauthorized || hdr.Get("Set-Cookie") != "" {
		t.Errorf("login with a wrong token: %d, cookie %q", code, hdr.Get("Set-Cookie"))
	}
	if s := h.jobStatus(queued); s != "queued" {
		t.Fatalf("the job is %s before any authorised action", s)
	}
	// The right token does; the session cookie is HttpOnly and SameSite.
	code, _, hdr := h.post("/login", url.Values{"token": {testToken}, "name": {"alice"}, "next": {"//evil.example/"}})
	if code != http.StatusSeeOther || hdr.Get("Location") != "/" {
		t.Fatalf("login: %d, Location %q (an off-site next must become /)", code, hdr.Get("Location"))
	}
	if c := hdr.Get("Set-Cookie"); !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") {
		t.Errorf("session cookie %q", c)
	}
	// Without the CSRF token, or with another one: refused.
	for _, tok := range []string{"", "AAAA"} {
		if code, _, _ := h.post(cancel, url.Values{"csrf": {tok}}); code != http.StatusForbidden {
			t.Errorf("cancel with csrf %q: %d, want 403", tok, code)
		}
	}
	// A cross-site form post: refused before the handler.
	_, body, _ = h.get(fmt.Sprintf("/jobs/%d", queued))
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the job page")
	}
	if code, _, _ := h.post(cancel, url.Values{"csrf": {m[1]}}, "Sec-Fetch-Site", "cross-site"); code != http.StatusForbidden {
		t.Errorf("a cross-site cancel: %d, want 403", code)
	}
	if s := h.jobStatus(queued); s != "queued" {
		t.Fatalf("the job is %s after refused actions", s)
	}
	// With it: cancelled, as `rtmanager jobs cancel` does, and logged.
	code, _, hdr = h.post(cancel, url.Values{"csrf": {m[1]}})
	if code != http.StatusSeeOther || !strings.Contains(hdr.Get("Location"), "done=cancelled") {
		t.Fatalf("cancel: %d, Location %q", code, hdr.Get("Location"))
	}
	if s := h.jobStatus(queued); s != "cancelled" {
		t.Fatalf("the job is %s after cancel", s)
	}
	mustContain(t, "the log", logs.String(), "console: action", "action=cancel", fmt.Sprintf("job_id=%d", queued), "who=alice", "via=token")
	// Cancel again: a clear conflict.
	if code, body, _ := h.post(cancel, url.Values{"csrf": {m[1]}}); code != http.StatusConflict || !strings.Contains(body, "finished") {
		t.Errorf("cancel of a cancelled job: %d\n%s", code, body)
	}
	// Retry the failed job, as `rtmanager jobs retry` does: a copy, queued.
	code, _, hdr = h.post(fmt.Sprintf("/jobs/%d/retry", failed), url.Values{"csrf": {m[1]}})
	if code != http.StatusSeeOther || !strings.Contains(hdr.Get("Location"), fmt.Sprintf("retried=%d", failed)) {
		t.Fatalf("retry: %d, Location %q", code, hdr.Get("Location"))
	}
	var copyID int64
	if err := h.p.QueryRow(context.Background(), "SELECT id FROM jobs WHERE game_id = 'alpha' AND status = 'queued' AND kind = 'start'").Scan(&copyID); err != nil {
		t.Fatalf("the retried copy: %v", err)
	}
	mustContain(t, "the log", logs.String(), "action=retry", fmt.Sprintf("outcome=\"enqueued as job %d\"", copyID))
	// A queued job is not retried: a clear conflict.
	if code, body, _ := h.post(fmt.Sprintf("/jobs/%d/retry", copyID), url.Values{"csrf": {m[1]}}); code != http.StatusConflict || !strings.Contains(body, "only failed or cancelled") {
		t.Errorf("retry of a queued job: %d\n%s", code, body)
	}
	// A script with the token as a bearer needs no CSRF token.
	var another int64
	if err := h.p.QueryRow(context.Background(), `INSERT INTO jobs (host_id, game_id, kind) VALUES ('host-b', 'delta', 'remove') RETURNING id`).Scan(&another); err != nil {
		t.Fatal(err)
	}
	h.http.Jar, _ = cookiejar.New(nil)
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", another), nil, "Authorization", "Bearer "+testToken); code != http.StatusSeeOther {
		t.Errorf("bearer cancel: %d", code)
	}
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", another), nil, "Authorization", "Bearer not-"+testToken); code != http.StatusUnauthorized {
		t.Errorf("bearer cancel with a wrong token: %d", code)
	}
}

func TestTrustedHeader(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, console.Options{DownAfter: time.Minute, Actions: true, TrustedHeader: "X-Forwarded-User", Logger: newLogger(&logs)})
	queued, _ := seed(t, h.p)
	_, body, _ := h.get(fmt.Sprintf("/jobs/%d", queued), "X-Forwarded-User", "bob@example.com")
	mustContain(t, "the job page", body, "acting as <b>bob@example.com</b>")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token")
	}
	// Another user's CSRF token does not do.
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", queued), url.Values{"csrf": {m[1]}}, "X-Forwarded-User", "eve"); code != http.StatusForbidden {
		t.Errorf("cancel with bob's CSRF token as eve: %d", code)
	}
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", queued), url.Values{"csrf": {m[1]}}); code != http.StatusUnauthorized {
		t.Errorf("cancel without the header: %d", code)
	}
	if code, _, _ := h.post(fmt.Sprintf("/jobs/%d/cancel", queued), url.Values{"csrf": {m[1]}}, "X-Forwarded-User", "bob@example.com"); code != http.StatusSeeOther {
		t.Errorf("cancel as bob: %d", code)
	}
	mustContain(t, "the log", logs.String(), `who=bob@example.com`, "via=header")
}

// TestLiveStream: an event committed after a page opened its stream
// arrives on it, woken by LISTEN or found by polling.
func TestLiveStream(t *testing.T) {
	for _, listen := range []bool{true, false} {
		t.Run(fmt.Sprintf("listen=%v", listen), func(t *testing.T) {
			h := newHarness(t, console.Options{DownAfter: time.Minute, Listen: listen})
			seed(t, h.p)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/live?game=alpha", nil)
			resp, err := h.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			lines := make(chan string, 100)
			go func() {
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			// Events written until one arrives: the broker may read its
			// starting position after the first insert.
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatal("the stream ended")
					}
					if strings.Contains(l, `"game_id":"bravo"`) {
						t.Fatalf("a stream for alpha carried bravo's event: %s", l)
					}
					if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"type":"runtime.removed"`) && strings.Contains(l, `"game_id":"alpha"`) {
						return
					}
				case <-tick.C:
					exec(t, h.p, `INSERT INTO outbox (type, host_id, game_id, payload) VALUES
						('runtime.removed', 'host-a', 'bravo', '{}'), ('runtime.removed', 'host-a', 'alpha', '{"to_status":"removed","from_status":"stopped","reason":"job_remove"}')`)
				case <-ctx.Done():
					t.Fatal("no live event within a minute")
				}
			}
		})
	}
}

func TestGamesKeysetPages(t *testing.T) {
	h := newHarness(t, console.Options{DownAfter: time.Minute})
	exec(t, h.p, `INSERT INTO runtime_records (game_id, host_id, status, current_container_id, current_image_ref,
		engine_endpoint, state_path, docker_network, started_at, last_op_at, created_at)
		SELECT 'g' || lpad(i::text, 4, '0'), 'host-a', 'running', 'c' || i, 'engine:1', 'http://e', '/s', 'n', now(), now(), now()
		FROM generate_series(1, 120) i`)
	seen := map[string]bool{}
	path := "/games"
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("more than three pages for 120 games")
		}
		_, body, _ := h.get(path)
		for _, m := range regexp.MustCompile(`data-game="(g\d+)"`).FindAllStringSubmatch(body, -1) {
			if seen[m[1]] {
				t.Errorf("%s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		path = ""
		if m := regexp.MustCompile(`href="(/games\?after=[^"]+)" rel="next"`).FindStringSubmatch(body); m != nil {
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(seen) != 120 {
		t.Errorf("saw %d games over the pages, want 120", len(seen))
	}
	_, body, _ := h.get("/games?q=g01")
	// g0100 .. g0120.
	if n := strings.Count(body, `data-game="g01`); n != 21 || strings.Count(body, `data-game="g`) != 21 {
		t.Errorf("search g01: %d rows, want 21", n)
	}
}
