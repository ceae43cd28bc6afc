package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// figures are what a scenario measured; the report has one row each.
type figures struct {
	Scenario string
	Rounds   int
	Faults   string
	Jobs     int
	Events   int
	// Lost: jobs that never finished, events the consumer never saw,
	// record changes without an event, finished jobs without an outcome
	// event.
	Lost int
	// Duplicated: a second outcome event for a job, an event the consumer
	// got twice, two events for one record change, a second container for
	// a game.
	Duplicated int
	// Violations: every other broken invariant (order, validity,
	// records that disagree with Docker, jobs running without a lease,
	// and the scenario's own expectations).
	Violations int
}

var (
	reportMu   sync.Mutex
	reportRows []figures
)

// report adds f to the report and fails the test for every problem.
func (h *harness) report(f figures) {
	h.t.Helper()
	reportMu.Lock()
	reportRows = append(reportRows, f)
	reportMu.Unlock()
	h.t.Logf("figures: %+v", f)
	if f.Lost+f.Duplicated+f.Violations > 0 {
		h.t.Errorf("%s: lost %d, duplicated %d, invariant violations %d (see above)", f.Scenario, f.Lost, f.Duplicated, f.Violations)
	}
}

// scenarioOrder is the row order of the report.
var scenarioOrder = []string{
	"SIGKILL during jobs", "two agents, one host id", "PostgreSQL restart and terminated connections",
	"state directory on a full disk", "state directory on a read-only filesystem", "state directory of another game", "hostile jobs",
	"dockerd restart, containers dying and removed behind its back",
}

const reportHeader = "| scenario | rounds | faults injected | jobs | events | lost | duplicated | invariant violations |\n|---|---:|---|---:|---:|---:|---:|---:|\n"

// writeReport writes the rows to RTM_FAULT_REPORT, keeping the rows of
// scenarios this run did not measure (the disruptive ones run apart).
func writeReport() error {
	path := os.Getenv("RTM_FAULT_REPORT")
	if path == "" || len(reportRows) == 0 {
		return nil
	}
	rows := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 3 || strings.HasPrefix(line, "|---") || strings.TrimSpace(cells[1]) == "scenario" {
				continue
			}
			rows[strings.TrimSpace(cells[1])] = line
		}
	}
	for _, f := range reportRows {
		rows[f.Scenario] = fmt.Sprintf("| %s | %d | %s | %d jobs | %d events | %d | %d | %d |",
			f.Scenario, f.Rounds, f.Faults, f.Jobs, f.Events, f.Lost, f.Duplicated, f.Violations)
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	rank := func(n string) int {
		for i, s := range scenarioOrder {
			if s == n {
				return i
			}
		}
		return len(scenarioOrder)
	}
	sort.Slice(names, func(i, j int) bool {
		if rank(names[i]) != rank(names[j]) {
			return rank(names[i]) < rank(names[j])
		}
		return names[i] < names[j]
	})
	var b strings.Builder
	b.WriteString(reportHeader)
	for _, n := range names {
		b.WriteString(rows[n] + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// jobRow is a job as the checker reads it.
type jobRow struct {
	ID          int64
	HostID      string
	GameID      string
	Kind        string
	Status      string
	Attempt     int
	LeaseOwner  *string
	LeaseExpiry *time.Time
	LastError   *string
	Live        bool // lease_expires_at > now()
}

func (h *harness) jobs(ctx context.Context) ([]jobRow, error) {
	rows, err := h.pool.Query(ctx, `SELECT id, host_id, game_id, kind, status, attempt, lease_owner, lease_expires_at, last_error,
		coalesce(lease_expires_at > now(), false) FROM jobs ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []jobRow
	for rows.Next() {
		var j jobRow
		if err := rows.Scan(&j.ID, &j.HostID, &j.GameID, &j.Kind, &j.Status, &j.Attempt, &j.LeaseOwner, &j.LeaseExpiry, &j.LastError, &j.Live); err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (h *harness) job(id int64) jobRow {
	h.t.Helper()
	var js []jobRow
	var err error
	// Retried: a connection terminated under the pool fails once.
	if !waitUntil(time.Minute, func() bool { js, err = h.jobs(h.ctx); return err == nil }) {
		h.t.Fatal(err)
	}
	for _, j := range js {
		if j.ID == id {
			return j
		}
	}
	h.t.Fatalf("job %d not found", id)
	return jobRow{}
}

func final(status string) bool {
	return status == "succeeded" || status == "failed" || status == "cancelled"
}

// waitJobs waits until every job of ids is final; it reports whether
// they all are.
func (h *harness) waitJobs(d time.Duration, ids ...int64) bool {
	want := map[int64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	return waitUntil(d, func() bool {
		js, err := h.jobs(h.ctx)
		if err != nil {
			return false
		}
		for _, j := range js {
			if want[j.ID] && !final(j.Status) {
				return false
			}
		}
		return true
	})
}

// outboxRow is an outbox event as the checker reads it with plain SQL.
type outboxRow struct {
	ID      int64
	Xid     uint64
	Type    string
	HostID  string
	GameID  string
	JobID   *int64
	Payload []byte
}

// readableOutbox returns every event below the watermark, in (xid, id)
// order.
func (h *harness) readableOutbox(ctx context.Context) ([]outboxRow, error) {
	rows, err := h.pool.Query(ctx, `SELECT id, xid::text, type, host_id, game_id, job_id, payload FROM outbox
		WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY outbox.xid, outbox.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var xid string
		if err := rows.Scan(&r.ID, &xid, &r.Type, &r.HostID, &r.GameID, &r.JobID, &r.Payload); err != nil {
			return nil, err
		}
		if r.Xid, err = strconv.ParseUint(xid, 10, 64); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// checkOptions tune check for a scenario.
type checkOptions struct {
	// settle bounds the wait for every job of the host to finish
	// (default 2 minutes).
	settle time.Duration
	// otherHosts are host ids whose jobs must stay queued, untouched.
	otherHosts []string
	// orphansAllowed: containers without a record that names them are
	// tolerated (the scenario created them on purpose).
	orphansAllowed bool
}

// problems collects what the checker found, by kind.
type problems struct {
	h                              *harness
	lost, duplicated, violations   int
	lostMsgs, dupMsgs, violations_ []string
}

func (p *problems) lose(format string, a ...any) {
	p.lost++
	p.lostMsgs = append(p.lostMsgs, fmt.Sprintf(format, a...))
}

func (p *problems) dup(format string, a ...any) {
	p.duplicated++
	p.dupMsgs = append(p.dupMsgs, fmt.Sprintf(format, a...))
}

func (p *problems) violate(format string, a ...any) {
	p.violations++
	p.violations_ = append(p.violations_, fmt.Sprintf(format, a...))
}

func (p *problems) log() {
	for _, m := range p.lostMsgs {
		p.h.t.Logf("LOST: %s", m)
	}
	for _, m := range p.dupMsgs {
		p.h.t.Logf("DUPLICATED: %s", m)
	}
	for _, m := range p.violations_ {
		p.h.t.Logf("VIOLATION: %s", m)
	}
}

// check waits for the host's jobs to finish and for a reconcile to have
// made the records agree with Docker, then checks every invariant. It
// returns the figures, with Scenario, Rounds and Faults left to the
// caller, plus the scenario's own violations added by the caller.
func (h *harness) check(o checkOptions) figures {
	h.t.Helper()
	if o.settle == 0 {
		o.settle = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(h.ctx, o.settle+3*time.Minute)
	defer cancel()
	p := &problems{h: h}
	begin := time.Now()
	phase := func(what string) { h.t.Logf("check: %s after %s", what, time.Since(begin).Round(time.Millisecond)) }
	other := map[string]bool{}
	for _, id := range o.otherHosts {
		other[id] = true
	}

	// 1. Jobs: finished, or legitimately queued (another host's).
	waitUntil(o.settle, func() bool {
		js, err := h.jobs(ctx)
		if err != nil {
			return false
		}
		for _, j := range js {
			if j.HostID == h.hostID && !final(j.Status) {
				return false
			}
		}
		return true
	})
	phase("jobs settled")
	js, err := h.jobs(ctx)
	if err != nil {
		h.t.Fatalf("read jobs: %v", err)
	}
	for _, j := range js {
		switch {
		case j.HostID != h.hostID:
			if !other[j.HostID] {
				p.violate("job %d names host %q, which no scenario expects", j.ID, j.HostID)
			} else if j.Status != "queued" || j.Attempt != 0 || j.LeaseOwner != nil {
				p.violate("job %d for another host %q was touched: status %s, attempt %d", j.ID, j.HostID, j.Status, j.Attempt)
			}
		case j.Status == "running" && !j.Live:
			p.violate("job %d (%s %s) is running without a live lease (owner %v)", j.ID, j.Kind, j.GameID, deref(j.LeaseOwner))
		case !final(j.Status):
			p.lose("job %d (%s %s) never finished: %s, attempt %d, error %s", j.ID, j.Kind, j.GameID, j.Status, j.Attempt, deref(j.LastError))
		}
	}

	// 2. Docker: at most one container per game, records agree (after a
	// reconcile pass: RTM_RECONCILE_INTERVAL is short, so poll).
	var lastDisagreement []string
	if !waitUntil(45*time.Second, func() bool {
		lastDisagreement = h.disagreements(ctx, o)
		return len(lastDisagreement) == 0
	}) {
		for _, m := range lastDisagreement {
			if strings.HasPrefix(m, "dup: ") {
				p.dup("%s", strings.TrimPrefix(m, "dup: "))
			} else {
				p.violate("%s", m)
			}
		}
	}

	phase("Docker agrees")
	// 3. Records: valid.
	recs, err := h.store.ListAllRecords(ctx, db.RecordFilter{Limit: 100000})
	if err != nil {
		h.t.Fatalf("read records: %v", err)
	}
	byGame := map[string]runtime.RuntimeRecord{}
	for _, r := range recs {
		byGame[r.GameID] = r
		if err := r.Validate(); err != nil {
			p.violate("record of %s is invalid: %v", r.GameID, err)
		}
	}

	// 4. Outbox: the consumer saw every event once, in order.
	var evs []outboxRow
	waitUntil(30*time.Second, func() bool {
		var err error
		evs, err = h.readableOutbox(ctx)
		if err != nil {
			return false
		}
		held, err := h.store.OutboxHeldBack(ctx, db.Position{})
		return err == nil && !held
	})
	phase("outbox readable")
	if h.consumer != nil {
		// Delivery is at least once: an event whose acknowledgement failed
		// (its connection terminated, say) comes again, and the Game
		// Master deduplicates by id (README, "Read events, gap-free"). So
		// an event delivered again is a duplicate only when no
		// acknowledgement failed, and the order checked is that of each
		// event's first delivery.
		waitUntil(30*time.Second, func() bool { return len(firstDeliveries(h.consumer.seen())) >= len(evs) })
		seen, failures := h.consumer.seen(), h.consumer.failures()
		first := firstDeliveries(seen)
		if again := len(seen) - len(first); again > 0 {
			if failures == 0 {
				p.dup("the consumer got %d events again though no acknowledgement failed", again)
			} else {
				p.h.t.Logf("the consumer got %d events again after %d failed acknowledgements or reads (at least once: deduplicated by id)", again, failures)
			}
		}
		delivered := map[int64]bool{}
		for _, ev := range first {
			delivered[ev.ID] = true
		}
		for i, ev := range evs {
			switch {
			case !delivered[ev.ID]:
				p.lose("the consumer never got event %d (%s %s)", ev.ID, ev.Type, ev.GameID)
			case i < len(first) && first[i].ID != ev.ID:
				p.violate("the consumer's event #%d is %d, the outbox's (xid, id) order says %d", i, first[i].ID, ev.ID)
			}
		}
	}

	phase("consumer caught up")
	// 5. Job outcome events: one per finished job, none for the others.
	outcomes := map[int64][]string{}
	for _, ev := range evs {
		if strings.HasPrefix(ev.Type, "job.") {
			if ev.JobID == nil {
				p.violate("event %d (%s) names no job", ev.ID, ev.Type)
				continue
			}
			outcomes[*ev.JobID] = append(outcomes[*ev.JobID], ev.Type)
		}
	}
	for _, j := range js {
		got := outcomes[j.ID]
		switch {
		case final(j.Status) && len(got) == 0:
			p.lose("job %d (%s %s) is %s without a job event", j.ID, j.Kind, j.GameID, j.Status)
		case len(got) > 1:
			p.dup("job %d (%s %s) has %d outcome events: %v", j.ID, j.Kind, j.GameID, len(got), got)
		case !final(j.Status) && len(got) > 0:
			p.violate("job %d is %s but has outcome event %v", j.ID, j.Status, got)
		case len(got) == 1 && got[0] != "job."+j.Status:
			p.violate("job %d is %s but its event is %s", j.ID, j.Status, got[0])
		}
	}

	// 6. Runtime events: per game one unbroken chain of valid records,
	// no change reported twice, ending in the record.
	chains := map[string][]outbox.RuntimePayload{}
	chainIDs := map[string][]int64{}
	for _, ev := range evs {
		if !strings.HasPrefix(ev.Type, "runtime.") {
			continue
		}
		var rp outbox.RuntimePayload
		if err := json.Unmarshal(ev.Payload, &rp); err != nil {
			p.violate("event %d (%s): payload does not decode: %v", ev.ID, ev.Type, err)
			continue
		}
		chains[ev.GameID] = append(chains[ev.GameID], rp)
		chainIDs[ev.GameID] = append(chainIDs[ev.GameID], ev.ID)
		if string(rp.ToStatus) != strings.TrimPrefix(ev.Type, "runtime.") || rp.Record.Status != rp.ToStatus {
			p.violate("event %d (%s): to_status %s, record status %s", ev.ID, ev.Type, rp.ToStatus, rp.Record.Status)
		}
		if err := rp.Record.Record().Validate(); err != nil {
			p.violate("event %d (%s %s) carries an invalid record: %v", ev.ID, ev.Type, ev.GameID, err)
		}
	}
	for g, chain := range chains {
		ids := chainIDs[g]
		for i, rp := range chain {
			switch {
			case i == 0 && rp.FromStatus != "":
				p.lose("game %s: its first event %d is a transition from %s: the creation's event is missing", g, ids[i], rp.FromStatus)
			case i > 0 && snapshotEqual(chain[i-1].Record, rp.Record):
				p.dup("game %s: events %d and %d report the same change", g, ids[i-1], ids[i])
			case i > 0 && rp.FromStatus != chain[i-1].ToStatus:
				p.lose("game %s: event %d goes from %s but the previous event %d ended in %s", g, ids[i], rp.FromStatus, ids[i-1], chain[i-1].ToStatus)
			}
		}
		rec, ok := byGame[g]
		if !ok {
			p.violate("game %s has runtime events but no record", g)
			continue
		}
		if last := chain[len(chain)-1].Record; !snapshotEqual(last, outbox.Snapshot(rec)) {
			p.lose("game %s: the record (%s, %s, last op %s) differs from its last event %d (%s, %s, last op %s): a change without an event",
				g, rec.Status, short(rec.CurrentContainerID), rec.LastOpAt.Format(time.RFC3339Nano),
				ids[len(ids)-1], last.Status, short(last.CurrentContainerID), last.LastOpAt.Format(time.RFC3339Nano))
		}
	}
	for g := range byGame {
		if len(chains[g]) == 0 {
			p.lose("game %s has a record but no runtime event", g)
		}
	}

	p.log()
	return figures{Jobs: len(js), Events: len(evs), Lost: p.lost, Duplicated: p.duplicated, Violations: p.violations}
}

// disagreements compares the host's records with its containers.
// Messages starting "dup: " are duplicates.
func (h *harness) disagreements(ctx context.Context, o checkOptions) []string {
	recs, err := h.store.ListAllRecords(ctx, db.RecordFilter{HostID: h.hostID, Limit: 100000})
	if err != nil {
		return []string{"read records: " + err.Error()}
	}
	cs, err := h.eng.ListManaged(ctx)
	if err != nil {
		return []string{"list containers: " + err.Error()}
	}
	var out []string
	byID := map[string]engine.Container{}
	perGame := map[string][]string{}
	for _, c := range cs {
		byID[c.ID] = c
		perGame[c.GameID] = append(perGame[c.GameID], short(c.ID))
	}
	for g, ids := range perGame {
		if len(ids) > 1 {
			out = append(out, fmt.Sprintf("dup: game %s has %d containers: %v", g, len(ids), ids))
		}
	}
	named := map[string]bool{}
	for _, r := range recs {
		named[r.CurrentContainerID] = true
		c, exists := byID[r.CurrentContainerID]
		switch r.Status {
		case runtime.StatusRunning:
			if !exists || !c.Running {
				out = append(out, fmt.Sprintf("game %s: record running on %s, Docker says exists=%v running=%v", r.GameID, short(r.CurrentContainerID), exists, c.Running))
			} else if c.Image != r.CurrentImageRef {
				out = append(out, fmt.Sprintf("game %s: record image %s, container image %s", r.GameID, r.CurrentImageRef, c.Image))
			}
		case runtime.StatusStopped:
			if !exists || c.Running {
				out = append(out, fmt.Sprintf("game %s: record stopped on %s, Docker says exists=%v running=%v", r.GameID, short(r.CurrentContainerID), exists, c.Running))
			}
		case runtime.StatusRemoved:
			if len(perGame[r.GameID]) > 0 {
				out = append(out, fmt.Sprintf("game %s: record removed, Docker still has %v", r.GameID, perGame[r.GameID]))
			}
		}
	}
	if !o.orphansAllowed {
		for _, c := range cs {
			if !named[c.ID] {
				out = append(out, fmt.Sprintf("container %s (%s, game %s, %s) is named by no record", short(c.ID), c.Name, c.GameID, c.State))
			}
		}
	}
	sort.Strings(out)
	return out
}

func snapshotEqual(a, b outbox.RecordSnapshot) bool {
	tp := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.GameID == b.GameID && a.HostID == b.HostID && a.Status == b.Status &&
		a.CurrentContainerID == b.CurrentContainerID && a.CurrentImageRef == b.CurrentImageRef &&
		a.EngineEndpoint == b.EngineEndpoint && a.StatePath == b.StatePath && a.DockerNetwork == b.DockerNetwork &&
		tp(a.StartedAt, b.StartedAt) && tp(a.StoppedAt, b.StoppedAt) && tp(a.RemovedAt, b.RemovedAt) &&
		a.LastOpAt.Equal(b.LastOpAt) && a.CreatedAt.Equal(b.CreatedAt)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	if id == "" {
		return "(none)"
	}
	return id
}

func deref(s *string) string {
	if s == nil {
		return "(null)"
	}
	return *s
}
