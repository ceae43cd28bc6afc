package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// outcome is what a hostile row must come to.
type outcome int

const (
	// refused: the job fails at once (attempt 1) with an error naming
	// wantErr; no container, no record, no state directory.
	refused outcome = iota
	// insertRefused: PostgreSQL refuses the row itself (type, NOT NULL or
	// CHECK), with an error naming wantErr.
	insertRefused
	// untouched: a job for another host stays queued, never claimed.
	untouched
	// harmless: the hostile part is inert; the job succeeds and the
	// container shows the value literally (wantErr is a NAME=value the
	// container's environment must hold, or empty).
	harmless
)

// hostileCase is one row of the table. game "" takes a fresh valid game
// id; victim targets a running game whose record and container must come
// out unchanged. sql, when set, replaces the standard insert: %[1]s is the
// host id, %[2]s the game id, both quoted.
type hostileCase struct {
	name    string
	host    string // "" is the agent's host
	game    *string
	victim  bool
	kind    string
	payload string
	sql     string
	want    outcome
	wantErr string
}

func str(s string) *string { return &s }

// hostileCases builds the table; img is the allowed test image.
func hostileCases(img string) []hostileCase {
	start := func(extra string) string {
		if extra == "" {
			return fmt.Sprintf(`{"image_ref": %q}`, img)
		}
		return fmt.Sprintf(`{"image_ref": %q, %s}`, img, extra)
	}
	manyEnv := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`"V%d": "x"`, i)
		}
		return `"env": {` + strings.Join(parts, ",") + `}`
	}
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	return []hostileCase{
		// Game ids that cannot name a container, or try to escape one.
		{name: "game id empty", game: str(""), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id 52 characters", game: str(strings.Repeat("a", 52)), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id 10k characters", game: str(strings.Repeat("g", 10000)), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id with ..", game: str("../etc"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id with slash", game: str("a/b"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id upper case", game: str("Game-1"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id shell ;", game: str("g;rm -rf /"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id shell $()", game: str("$(reboot)"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id backticks", game: str("g`id`"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id leading dash", game: str("-rm"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id trailing dash", game: str("g-"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id newline", game: str("g\nlevel=ERROR forged"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id space", game: str(" g"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id non-ASCII", game: str("gäme"), kind: "start", payload: start(""), wantErr: "game_id"},
		{name: "game id NUL", sql: `INSERT INTO jobs (host_id, game_id, kind) VALUES (%[1]s, E'g\x00', 'remove')`, want: insertRefused, wantErr: "0x00"},
		// State directories escaping the state root.
		{name: "state_dir ..", kind: "start", payload: start(`"state_dir": "../escape"`), wantErr: "state_dir"},
		{name: "state_dir absolute", kind: "start", payload: start(`"state_dir": "/etc"`), wantErr: "state_dir"},
		{name: "state_dir inner ..", kind: "start", payload: start(`"state_dir": "a/../../etc"`), wantErr: "state_dir"},
		{name: "state_dir .", kind: "start", payload: start(`"state_dir": "."`), wantErr: "state_dir"},
		{name: "state_dir only ..", kind: "start", payload: start(`"state_dir": ".."`), wantErr: "state_dir"},
		// {game} is the row's game id and {victim} the victim's: the traps
		// below sit in the row's own game directory.
		{name: "state_dir symlink out", kind: "start", payload: start(`"state_dir": "{game}/link-out/x"`), wantErr: "pointing outside the game's directory"},
		{name: "state_dir symlink to parent", kind: "start", payload: start(`"state_dir": "{game}/link-up/x"`), wantErr: "pointing outside the game's directory"},
		{name: "state_dir dangling symlink", kind: "start", payload: start(`"state_dir": "{game}/link-dangling"`), wantErr: "does not resolve"},
		{name: "state_dir through a file", kind: "start", payload: start(`"state_dir": "{game}/a-file/x"`), wantErr: "is not a directory"},
		{name: "state_dir symlink to another game", kind: "start", payload: start(`"state_dir": "{game}/link-victim"`), wantErr: "pointing outside the game's directory"},
		{name: "state_dir of another game", kind: "start", payload: start(`"state_dir": "{victim}"`), wantErr: "does not start with the game id"},
		{name: "state_dir inside another game", kind: "start", payload: start(`"state_dir": "{victim}/x"`), wantErr: "does not start with the game id"},
		{name: "state_dir beside the games", kind: "start", payload: start(`"state_dir": "shared/{game}"`), wantErr: "does not start with the game id"},
		{name: "state_dir 5000 characters", kind: "start", payload: start(`"state_dir": "` + strings.Repeat("d", 5000) + `"`), wantErr: "state_dir"},
		{name: "state_dir NUL", kind: "start", payload: start(`"state_dir": "a\u0000b"`), want: insertRefused, wantErr: "unicode escape"},
		{name: "state_dir wrong type", kind: "start", payload: start(`"state_dir": ["a"]`), wantErr: "payload"},
		{name: "state_dir on a stop", kind: "stop", victim: true, payload: `{"state_dir": "x"}`, wantErr: "payload"},
		// Images outside the allow-list.
		{name: "image not allowed", kind: "start", payload: `{"image_ref": "alpine:3.20"}`, wantErr: "image"},
		{name: "image prefix look-alike", kind: "start", payload: `{"image_ref": "` + dockertest.ImageRepo + `-evil:1"}`, wantErr: "image"},
		{name: "image other registry", kind: "start", payload: `{"image_ref": "evil.example.com/` + dockertest.ImageRepo + `:1"}`, wantErr: "image"},
		{name: "image empty", kind: "start", payload: `{"image_ref": ""}`, wantErr: "image_ref"},
		{name: "image missing", kind: "start", payload: `{}`, wantErr: "image_ref"},
		{name: "image upper case", kind: "start", payload: `{"image_ref": "RTMANAGER-TEST-ENGINE:1"}`, wantErr: "image"},
		{name: "image with a flag", kind: "start", payload: `{"image_ref": "--privileged"}`, wantErr: "image"},
		{name: "image bad digest", kind: "start", payload: `{"image_ref": "` + dockertest.ImageRepo + `@sha256:zz"}`, wantErr: "image"},
		{name: "image wrong type", kind: "start", payload: `{"image_ref": 42}`, wantErr: "payload"},
		{name: "image change to a foreign image", victim: true, kind: "change_image", payload: `{"image_ref": "alpine:3.20"}`, wantErr: "image"},
		// Environment injection.
		{name: "env reserved RTM_", kind: "start", payload: start(`"env": {"RTM_HOST_ID": "other"}`), wantErr: "env"},
		{name: "env reserved rtm_ lower case", kind: "start", payload: start(`"env": {"rtm_x": "1"}`), wantErr: "env"},
		{name: "env name with =", kind: "start", payload: start(`"env": {"A=B": "c"}`), wantErr: "env"},
		{name: "env name with space", kind: "start", payload: start(`"env": {"A B": "c"}`), wantErr: "env"},
		{name: "env name empty", kind: "start", payload: start(`"env": {"": "c"}`), wantErr: "env"},
		{name: "env name starts with digit", kind: "start", payload: start(`"env": {"1A": "c"}`), wantErr: "env"},
		{name: "env name 300 characters", kind: "start", payload: start(`"env": {"` + strings.Repeat("N", 300) + `": "c"}`), wantErr: "env"},
		{name: "env value with newline", kind: "start", payload: start(`"env": {"A": "x\nB=y"}`), wantErr: "env"},
		{name: "env value with CR", kind: "start", payload: start(`"env": {"A": "x\rB=y"}`), wantErr: "env"},
		{name: "env value 9 KiB", kind: "start", payload: start(`"env": {"A": "` + strings.Repeat("v", 9<<10) + `"}`), wantErr: "env"},
		{name: "env 129 variables", kind: "start", payload: start(manyEnv(129)), wantErr: "env"},
		{name: "env value wrong type", kind: "start", payload: start(`"env": {"A": 1}`), wantErr: "env"},
		{name: "env as a list", kind: "start", payload: start(`"env": ["A=1"]`), wantErr: "env"},
		{name: "env on an image change", victim: true, kind: "change_image", payload: `{"image_ref": "` + img + `", "env": {"RTM_X": "1"}}`, wantErr: "env"},
		// Limits.
		{name: "memory negative", kind: "start", payload: start(`"limits": {"memory_bytes": -1}`), wantErr: "limits.memory_bytes"},
		{name: "memory below the minimum", kind: "start", payload: start(`"limits": {"memory_bytes": 1}`), wantErr: "limits.memory_bytes"},
		{name: "memory absurd", kind: "start", payload: start(`"limits": {"memory_bytes": 1e30}`), wantErr: "limits.memory_bytes"},
		{name: "memory over the maximum", kind: "start", payload: start(`"limits": {"memory_bytes": 1099511627776}`), wantErr: "limits.memory_bytes"},
		{name: "memory as a string", kind: "start", payload: start(`"limits": {"memory_bytes": "1g"}`), wantErr: "limits.memory_bytes"},
		{name: "cpus over the maximum", kind: "start", payload: start(`"limits": {"nano_cpus": 9000000000}`), wantErr: "limits.nano_cpus"},
		{name: "cpus fractional", kind: "start", payload: start(`"limits": {"nano_cpus": 0.5}`), wantErr: "limits.nano_cpus"},
		{name: "pids negative", kind: "start", payload: start(`"limits": {"pids_limit": -5}`), wantErr: "limits.pids_limit"},
		{name: "pids absurd", kind: "start", payload: start(`"limits": {"pids_limit": 1000000}`), wantErr: "limits.pids_limit"},
		{name: "limits as a list", kind: "start", payload: start(`"limits": []`), wantErr: "limits"},
		{name: "limits unknown key", kind: "start", payload: start(`"limits": {"privileged": true}`), wantErr: "limits"},
		{name: "stop timeout negative", victim: true, kind: "stop", payload: `{"timeout_seconds": -1}`, wantErr: "timeout_seconds"},
		{name: "stop timeout absurd", victim: true, kind: "stop", payload: `{"timeout_seconds": 1000000000}`, wantErr: "timeout_seconds"},
		{name: "restart timeout as a string", victim: true, kind: "restart", payload: `{"timeout_seconds": "10"}`, wantErr: "payload"},
		{name: "restart timeout fractional", victim: true, kind: "restart", payload: `{"timeout_seconds": 1.5}`, wantErr: "payload"},
		// Kinds.
		{name: "kind unknown", kind: "delete", payload: `{}`, wantErr: "kind"},
		{name: "kind upper case", kind: "START", payload: start(""), wantErr: "kind"},
		{name: "kind empty", kind: "", payload: `{}`, wantErr: "kind"},
		{name: "kind with SQL", kind: "start'; DROP TABLE jobs; --", payload: start(""), wantErr: "kind"},
		{name: "kind unknown on the victim", victim: true, kind: "exec", payload: `{"cmd": "sh"}`, wantErr: "kind"},
		// Payload shapes.
		{name: "payload JSON null", kind: "start", payload: `null`, wantErr: "image_ref"},
		{name: "remove with a key", kind: "remove", victim: true, payload: `{"force": true}`, wantErr: "payload"},
		{name: "payload a list", kind: "start", payload: `[]`, wantErr: "payload"},
		{name: "payload a string", kind: "start", payload: `"start"`, wantErr: "payload"},
		{name: "payload a number", kind: "start", payload: `42`, wantErr: "payload"},
		{name: "payload unknown key", kind: "start", payload: start(`"privileged": true`), wantErr: "payload"},
		{name: "payload misspelled key", kind: "start", payload: `{"imageRef": "` + img + `"}`, wantErr: "payload"},
		{name: "payload deeply nested", kind: "start", payload: start(`"env": {"A": ` + deep + `}`), wantErr: "payload"},
		{name: "payload 80 KiB", kind: "start", payload: start(`"state_dir": "` + strings.Repeat("x", 80<<10) + `"`), wantErr: "payload"},
		{name: "payload not JSON", kind: "start", payload: `not json`, want: insertRefused, wantErr: "json"},
		{name: "payload NULL", sql: `INSERT INTO jobs (host_id, game_id, kind, payload) VALUES (%[1]s, %[2]s, 'start', NULL)`, want: insertRefused, wantErr: "null"},
		// Hosts.
		{name: "job for another host", host: "some-other-host", kind: "start", payload: start(""), want: untouched},
		{name: "job for a blank host", host: " ", kind: "start", payload: start(""), want: untouched},
		// SQL-level junk a writer with INSERT on jobs could try.
		{name: "kind NULL", sql: `INSERT INTO jobs (host_id, game_id, kind) VALUES (%[1]s, %[2]s, NULL)`, want: insertRefused, wantErr: "null"},
		{name: "max_attempts negative", sql: `INSERT INTO jobs (host_id, game_id, kind, max_attempts) VALUES (%[1]s, %[2]s, 'remove', -1)`, want: insertRefused, wantErr: "max_attempts"},
		{name: "max_attempts absurd", sql: `INSERT INTO jobs (host_id, game_id, kind, max_attempts) VALUES (%[1]s, %[2]s, 'remove', 100000)`, want: insertRefused, wantErr: "max_attempts"},
		{name: "max_attempts wrong type", sql: `INSERT INTO jobs (host_id, game_id, kind, max_attempts) VALUES (%[1]s, %[2]s, 'remove', 'many')`, want: insertRefused, wantErr: "integer"},
		{name: "status running without a lease", sql: `INSERT INTO jobs (host_id, game_id, kind, status) VALUES (%[1]s, %[2]s, 'remove', 'running')`, want: insertRefused, wantErr: "jobs_running_has_lease"},
		{name: "status succeeded up front", sql: `INSERT INTO jobs (host_id, game_id, kind, status) VALUES (%[1]s, %[2]s, 'remove', 'succeeded')`, want: insertRefused, wantErr: "jobs_final_has_finished_at"},
		{name: "status unknown", sql: `INSERT INTO jobs (host_id, game_id, kind, status) VALUES (%[1]s, %[2]s, 'remove', 'hacked')`, want: insertRefused, wantErr: "jobs_status_known"},
		{name: "run_after wrong type", sql: `INSERT INTO jobs (host_id, game_id, kind, run_after) VALUES (%[1]s, %[2]s, 'remove', 'soon')`, want: insertRefused, wantErr: "timestamp"},
		// Inert: accepted, and nothing gets in.
		{name: "env value with shell syntax", kind: "start", payload: start(`"env": {"GAME_MODE": "$(rm -rf /); ` + "`id`" + ` && reboot"}`), want: harmless,
			wantErr: "GAME_MODE=$(rm -rf /); `id` && reboot"},
		{name: "traceparent garbage", sql: `INSERT INTO jobs (host_id, game_id, kind, payload, traceparent) VALUES (%[1]s, %[2]s, 'start', '{"image_ref": "` + img + `"}', '00-zz''; DROP TABLE jobs; --')`, want: harmless},
	}
}

// TestHostileJobs feeds the agent the hostile table. Every row must end as
// its outcome says, with no container, record or state directory for
// refused rows, and the victim game untouched by the rows aimed at it.
func TestHostileJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	h.startConsumer()
	victim := h.game("victim")
	cases := hostileCases(h.image)
	// Traps in the own directory of every game whose state_dir goes
	// through one.
	for i, c := range cases {
		if !strings.Contains(c.payload, "{game}/") {
			continue
		}
		dir := filepath.Join(h.stateRoot, h.game(fmt.Sprintf("h%d", i)))
		must(t, os.Mkdir(dir, 0o750))
		must(t, os.Symlink("/etc", filepath.Join(dir, "link-out")))
		must(t, os.Symlink("..", filepath.Join(dir, "link-up")))
		must(t, os.Symlink("/nonexistent-rtm", filepath.Join(dir, "link-dangling")))
		must(t, os.Symlink(filepath.Join(h.stateRoot, victim), filepath.Join(dir, "link-victim")))
		must(t, os.WriteFile(filepath.Join(dir, "a-file"), nil, 0o600))
	}
	h.startAgent()

	vj := h.enqueue(victim, "start", startPayload(h.image), 0)
	if !h.waitJobs(time.Minute, vj) || h.job(vj).Status != "succeeded" {
		t.Fatalf("the victim game did not start: %+v", h.job(vj))
	}
	before, err := h.store.GetRecord(h.ctx, victim)
	must(t, err)
	// The engine writes its marker after the job has succeeded (it is
	// the engine's own start-up, not the agent's); a snapshot taken
	// before it lands sees the temporary file and reports a change
	// nobody made.
	marker := filepath.Join(h.stateRoot, victim, "engine-started")
	if !waitUntil(30*time.Second, func() bool { _, err := os.Stat(marker); return err == nil }) {
		t.Fatalf("the victim's engine never wrote %s", marker)
	}
	rootBefore := dirNames(t, h.stateRoot)
	victimFiles := dirNames(t, filepath.Join(h.stateRoot, victim))

	type row struct {
		c    hostileCase
		game string
		id   int64
		err  error
	}
	rows := make([]row, len(cases))
	var ids []int64
	for i, c := range cases {
		g := h.game(fmt.Sprintf("h%d", i))
		switch {
		case c.victim:
			g = victim
		case c.game != nil:
			g = *c.game
		}
		host := h.hostID
		if c.host != "" {
			host = c.host
		}
		rows[i] = row{c: c, game: g}
		if c.sql != "" {
			err = h.pool.QueryRow(h.ctx, fmt.Sprintf(c.sql+" RETURNING id", quoteLit(host), quoteLit(g))).Scan(&rows[i].id)
		} else {
			payload := strings.NewReplacer("{game}", g, "{victim}", victim).Replace(c.payload)
			err = h.pool.QueryRow(h.ctx, `INSERT INTO jobs (host_id, game_id, kind, payload) VALUES ($1, $2, $3, $4::jsonb) RETURNING id`,
				host, g, c.kind, payload).Scan(&rows[i].id)
		}
		rows[i].err = err
		if err == nil && c.want != untouched {
			ids = append(ids, rows[i].id)
		}
	}
	// A last valid job of the host: once it is done, the agent has had
	// its chance at every row before it.
	sentinel := h.enqueue(h.game("sentinel"), "start", startPayload(h.image), 0)
	ids = append(ids, sentinel)
	h.waitJobs(2*time.Minute, ids...)

	var violations int
	bad := func(c hostileCase, format string, a ...any) {
		violations++
		t.Logf("VIOLATION: %s: %s", c.name, fmt.Sprintf(format, a...))
	}
	cs, err := h.eng.ListManaged(h.ctx)
	must(t, err)
	containers := map[string]int{}
	for _, c := range cs {
		containers[c.GameID]++
	}
	counts := map[outcome]int{}
	for _, r := range rows {
		c := r.c
		counts[c.want]++
		if c.want == insertRefused {
			if r.err == nil {
				bad(c, "the database accepted the row (job %d)", r.id)
			} else if !strings.Contains(strings.ToLower(r.err.Error()), strings.ToLower(c.wantErr)) {
				bad(c, "insert error %q does not name %q", r.err, c.wantErr)
			}
			continue
		}
		if r.err != nil {
			bad(c, "insert failed: %v", r.err)
			continue
		}
		j := h.job(r.id)
		switch c.want {
		case untouched:
			if j.Status != "queued" || j.Attempt != 0 || j.LeaseOwner != nil {
				bad(c, "a job for host %q was touched: %s, attempt %d", c.host, j.Status, j.Attempt)
			}
		case harmless:
			if j.Status != "succeeded" {
				bad(c, "job ended %s: %s", j.Status, deref(j.LastError))
				continue
			}
			if c.wantErr != "" {
				ins, err := h.eng.InspectContainer(h.ctx, "galaxy-game-"+r.game)
				if err != nil {
					bad(c, "inspect: %v", err)
					continue
				}
				env := h.containerEnv(ins.ID)
				if !slices.Contains(env, c.wantErr) {
					bad(c, "the container's environment %q lacks %q", env, c.wantErr)
				}
			}
		case refused:
			switch {
			case j.Status != "failed":
				bad(c, "job ended %s (attempt %d), want failed: %s", j.Status, j.Attempt, deref(j.LastError))
			case j.Attempt != 1:
				bad(c, "job failed after %d attempts; a bad job must fail at once", j.Attempt)
			case !strings.Contains(deref(j.LastError), c.wantErr):
				bad(c, "error %q does not name %q", deref(j.LastError), c.wantErr)
			}
			if !c.victim {
				if containers[r.game] > 0 {
					bad(c, "a container exists for game %q", r.game)
				}
				if _, err := h.store.GetRecord(h.ctx, r.game); err == nil {
					bad(c, "a record exists for game %q", r.game)
				}
			}
		}
	}
	after, err := h.store.GetRecord(h.ctx, victim)
	must(t, err)
	if !snapshotEqual(outbox.Snapshot(before), outbox.Snapshot(after)) {
		bad(hostileCase{name: "victim"}, "the victim's record changed: %+v -> %+v", before, after)
	}
	if now := dirNames(t, filepath.Join(h.stateRoot, victim)); !slices.Equal(now, victimFiles) {
		bad(hostileCase{name: "victim"}, "the victim's state directory changed: %q -> %q", victimFiles, now)
	}
	if c, err := h.eng.InspectContainer(h.ctx, before.CurrentContainerID); err != nil || !c.Running {
		bad(hostileCase{name: "victim"}, "the victim's container is not running: %v", err)
	}
	// Nothing half-created in the state root: only the accepted games'
	// directories are new.
	for _, name := range dirNames(t, h.stateRoot) {
		if slices.Contains(rootBefore, name) || name == h.game("sentinel") {
			continue
		}
		accepted := false
		for _, r := range rows {
			if r.c.want == harmless && r.game == name {
				accepted = true
			}
		}
		if !accepted {
			bad(hostileCase{name: "state root"}, "%s appeared in the state root", name)
		}
	}
	var foreign []string
	for _, r := range rows {
		if r.c.want == untouched {
			foreign = append(foreign, r.c.host)
		}
	}
	f := h.check(checkOptions{otherHosts: foreign})
	f.Violations += violations
	f.Scenario, f.Rounds = "hostile jobs", len(cases)
	f.Faults = fmt.Sprintf("%d hostile rows: %d refused by the agent, %d refused by PostgreSQL, %d for other hosts left queued, %d inert values run literally",
		len(cases), counts[refused], counts[insertRefused], counts[untouched], counts[harmless])
	h.report(f)
}

func (h *harness) containerEnv(id string) []string {
	h.t.Helper()
	res, err := h.raw.ContainerInspect(h.ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		h.t.Fatalf("inspect %s: %v", id, err)
	}
	return res.Container.Config.Env
}

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
