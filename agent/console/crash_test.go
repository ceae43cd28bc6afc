package console_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/console"
)

// TestGameShowsLastCrash: the game page shows the game's last crash report
// (not an older one) with its lines escaped, and the record's health; a
// game that never crashed says so.
func TestGameShowsLastCrash(t *testing.T) {
	h := newHarness(t, console.Options{DownAfter: time.Minute})
	seed(t, h.p)
	exec(t, h.p, `UPDATE runtime_records SET health = 'unhealthy' WHERE game_id = 'alpha'`)
	// The lines as the agent stores them: sanitised (the escape is the text
	// \x1b, not the byte), but still the engine's untrusted output.
	exec(t, h.p, `INSERT INTO crash_reports (game_id, host_id, container_id, exit_code, oom, exited_at, lines, truncated, capture_error) VALUES
		('alpha', 'host-a', 'c0ffee000000aaaa', 1, false, now() - interval '1 hour', '[{"stream":"stdout","text":"an older crash"}]', false, NULL),
		('alpha', 'host-a', 'c0ffee000000aaaa', 137, true, now(), $1, true, 'logs: <b>partial</b>')`,
		`[{"stream":"stdout","text":"<script>alert(1)</script>"},`+
			`{"stream":"stderr","text":"\"><img src=x onerror=alert(1)>"},`+
			`{"stream":"stderr","text":"\\x1b[31mpanic: boom"}]`)

	code, body, _ := h.get("/games/alpha")
	if code != 200 {
		t.Fatalf("GET /games/alpha: %d\n%s", code, body)
	}
	i := strings.Index(body, `id="last-crash"`)
	if i < 0 {
		t.Fatalf("no last-crash panel:\n%s", body)
	}
	panel := body[i:]
	panel = panel[:strings.Index(panel, "</section>")]
	mustContain(t, "the last crash", panel,
		"exit code <b>137</b>", "OOM killed", "truncated",
		"logs: &lt;b&gt;partial&lt;/b&gt;",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		"&#34;&gt;&lt;img src=x onerror=alert(1)&gt;",
		`\x1b[31mpanic: boom`)
	if m := regexp.MustCompile(`(?i)<script>|<img |<b>partial|\x1b`).FindString(panel); m != "" {
		t.Errorf("the crash lines render %q unescaped:\n%s", m, panel)
	}
	if strings.Contains(panel, "an older crash") || strings.Contains(panel, "no crash recorded") {
		t.Errorf("the panel is not the last crash alone:\n%s", panel)
	}
	mustContain(t, "the record", body, `data-health="unhealthy"`)

	_, body, _ = h.get("/games/bravo")
	mustContain(t, "GET /games/bravo", body, `id="last-crash"`, "no crash recorded", `data-health="none"`)
	if strings.Contains(body, "exit code <b>137</b>") {
		t.Errorf("bravo shows alpha's crash")
	}
}
