// Package readme_test executes the README's Game Master contract: every
// ```sql block of that section runs against a real migrated database and a
// real running agent, the read loop is read back across a power of ten of
// the transaction counter, and the Go client block must be the body of an
// Example that runs. The README cannot drift from the product again.
//
// It sits with the other end-to-end suites (e2e/) because it runs the
// built rtmanager binary against PostgreSQL and dockerd; it is a test-only
// package, as nothing else should import README parsing.
package readme_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/sqlcheck"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// contractSection is the README section whose SQL and Go the tests run.
const contractSection = "Game Master contract"

// block is one fenced code block of a Markdown file.
type block struct {
	lang    string
	text    string
	line    int    // of the opening fence, 1-based
	section string // the enclosing "## " heading
}

// parseMarkdown returns the fenced code blocks of src. Fences may be
// indented (a block inside a list item); the indentation of the opening
// fence is taken off the block's lines.
func parseMarkdown(src string) []block {
	var out []block
	var cur *block
	var indent int
	var body []string
	section := ""
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if cur != nil {
			if strings.HasPrefix(trimmed, "```") && strings.Trim(trimmed, "` \t") == "" {
				cur.text = strings.Join(body, "\n")
				out = append(out, *cur)
				cur = nil
				continue
			}
			n := min(indent, len(line)-len(trimmed))
			body = append(body, line[n:])
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			lang, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), " ")
			cur = &block{lang: lang, line: i + 1, section: section}
			indent, body = len(line)-len(trimmed), nil
			continue
		}
		if h, ok := strings.CutPrefix(line, "## "); ok {
			section = strings.TrimSpace(h)
		}
	}
	return out
}

// readFile reads a file of the repository, relative to this package.
func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile("../../" + path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// contractBlocks returns the README's blocks of lang in the Game Master
// contract section; the section must have some.
func contractBlocks(t testing.TB, lang string) []block {
	t.Helper()
	var out []block
	for _, b := range parseMarkdown(readFile(t, "README.md")) {
		if b.section == contractSection && b.lang == lang {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("README.md: no ```%s block in section %q", lang, contractSection)
	}
	return out
}

// A role is what a statement of the contract does. Every statement of the
// section must have exactly one role and every role exactly one statement:
// a statement added to the README that no test runs fails the tests.
type role string

const (
	roleEnqueue       role = "enqueue a job"
	roleCancel        role = "cancel a job"
	roleRecordOfGame  role = "read one game's record"
	roleRecordsOfHost role = "read a host's records by status"
	roleJobsOfGame    role = "read a game's jobs"
	roleReadOutbox    role = "read events after a position"
	roleRegister      role = "register a consumer"
	rolePosition      role = "read a consumer's position"
	roleAck           role = "acknowledge up to an event"
)

var roles = []struct {
	role role
	re   *regexp.Regexp
}{
	{roleEnqueue, regexp.MustCompile(`(?is)^INSERT INTO jobs\b`)},
	{roleCancel, regexp.MustCompile(`(?is)^UPDATE jobs SET cancel_requested_at\b`)},
	{roleRecordOfGame, regexp.MustCompile(`(?is)^SELECT .* FROM runtime_records WHERE game_id = \$1$`)},
	{roleRecordsOfHost, regexp.MustCompile(`(?is)^SELECT .* FROM runtime_records WHERE host_id = \$1 AND status = 'running'$`)},
	{roleJobsOfGame, regexp.MustCompile(`(?is)^SELECT .* FROM jobs WHERE game_id = \$1 ORDER BY .*$`)},
	{roleReadOutbox, regexp.MustCompile(`(?is)^SELECT .* FROM outbox WHERE .*`)},
	{roleRegister, regexp.MustCompile(`(?is)^INSERT INTO outbox_consumers\b`)},
	{rolePosition, regexp.MustCompile(`(?is)^SELECT .* FROM outbox_consumers WHERE name = `)},
	{roleAck, regexp.MustCompile(`(?is)^UPDATE outbox_consumers SET\b`)},
}

// statement is one statement of the contract, as the README writes it.
type statement struct {
	sql  string // verbatim, comments included
	line int    // of its block's opening fence
}

// contract is the README's Game Master contract, statement by role, and
// which statements a test has run.
type contract struct {
	t     testing.TB
	stmts map[role]statement
	ran   map[role]bool
}

// loadContract splits every ```sql block of the contract section into
// statements and gives each its role.
func loadContract(t testing.TB) *contract {
	t.Helper()
	c := &contract{t: t, stmts: map[role]statement{}, ran: map[role]bool{}}
	for _, b := range contractBlocks(t, "sql") {
		for _, sql := range sqlcheck.Split(b.text) {
			var matched []role
			for _, r := range roles {
				if r.re.MatchString(normalise(sql)) {
					matched = append(matched, r.role)
				}
			}
			switch {
			case len(matched) == 0:
				t.Fatalf("README.md:%d: a statement no test runs: give it a role in e2e/readme and run it there:\n%s", b.line, sql)
			case len(matched) > 1:
				t.Fatalf("README.md:%d: a statement matches the roles %q: make the roles of e2e/readme tell them apart:\n%s", b.line, matched, sql)
			}
			if prev, dup := c.stmts[matched[0]]; dup {
				t.Fatalf("README.md:%d and %d: two statements %s: give the second a role of its own in e2e/readme", prev.line, b.line, matched[0])
			}
			c.stmts[matched[0]] = statement{sql: sql, line: b.line}
		}
	}
	for _, r := range roles {
		if _, ok := c.stmts[r.role]; !ok {
			t.Fatalf("README.md: section %q lost its statement to %s", contractSection, r.role)
		}
	}
	return c
}

// normalise drops comments and folds whitespace, for matching only.
func normalise(sql string) string {
	var lines []string
	for _, line := range strings.Split(sql, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		lines = append(lines, line)
	}
	return strings.Join(strings.Fields(strings.Join(lines, " ")), " ")
}

// sql returns the statement of r, verbatim, and counts it as run: callers
// run what they ask for.
func (c *contract) sql(r role) string {
	c.ran[r] = true
	return c.stmts[r].sql
}

// replace returns s with every old replaced by new, and fails the test when
// old is not there: a substitution the README no longer allows is a change
// the test must hear about.
func replace(t testing.TB, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("the README statement no longer contains %s; update e2e/readme:\n%s", old, s)
	}
	return strings.ReplaceAll(s, old, new)
}

// consumerName is the name the README's consumer statements use.
const consumerName = "'game-master'"

// event is one outbox row as the README's read query returns it.
type event struct {
	id     int64
	xid    uint64
	xidArg string // the xid as read, handed back as $1 of the next read and of the ack
	typ    string
	gameID string
	jobID  *int64
}

func (e event) String() string { return fmt.Sprintf("%s(%d,%d)", e.typ, e.xid, e.id) }

// reader runs the README's read loop: the consumer's position, one page
// after it, processing, the acknowledgement; page after page.
type reader struct {
	read, position, ack string
}

// newReader is the documented read loop for consumer name (registered
// here with the README's statement), reading pages with read.
func (c *contract) newReader(ctx context.Context, conn *pgx.Conn, name, read string) reader {
	c.t.Helper()
	quoted := "'" + name + "'"
	register := replace(c.t, c.sql(roleRegister), consumerName, quoted)
	if _, err := conn.Exec(ctx, register); err != nil {
		c.t.Fatalf("README.md:%d: register the consumer: %v\n%s", c.stmts[roleRegister].line, err, register)
	}
	return reader{
		read:     read,
		position: replace(c.t, c.sql(rolePosition), consumerName, quoted),
		ack:      replace(c.t, c.sql(roleAck), consumerName, quoted),
	}
}

// drain reads pages until one comes back empty, acknowledging each page
// after it is "processed" (appended to the result).
func (r reader) drain(ctx context.Context, t testing.TB, conn *pgx.Conn) []event {
	t.Helper()
	var out []event
	for {
		var lastXid string
		var lastID int64
		if err := conn.QueryRow(ctx, r.position).Scan(&lastXid, &lastID); err != nil {
			t.Fatalf("read the consumer's position: %v\n%s", err, r.position)
		}
		page := r.page(ctx, t, conn, lastXid, lastID)
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		last := page[len(page)-1]
		tag, err := conn.Exec(ctx, r.ack, last.xidArg, last.id)
		if err != nil {
			t.Fatalf("acknowledge %v: %v\n%s", last, err, r.ack)
		}
		if tag.RowsAffected() != 1 {
			t.Fatalf("acknowledging %v after (%s, %d) moved no position: the page went backwards", last, lastXid, lastID)
		}
	}
}

// page runs the read statement after (xid, id).
func (r reader) page(ctx context.Context, t testing.TB, conn *pgx.Conn, xid string, id int64) []event {
	t.Helper()
	rows, err := conn.Query(ctx, r.read, xid, id)
	if err != nil {
		t.Fatalf("read events after (%s, %d): %v\n%s", xid, id, err, r.read)
	}
	maps, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatalf("read events after (%s, %d): %v", xid, id, err)
	}
	out := make([]event, 0, len(maps))
	for _, m := range maps {
		out = append(out, eventOf(t, m))
	}
	return out
}

// eventOf reads a row by column name: the README may reorder or rename
// its columns, but it must return the id, an xid and the event's type,
// game and job.
func eventOf(t testing.TB, m map[string]any) event {
	t.Helper()
	var e event
	var xidCols []string
	for col, v := range m {
		if strings.Contains(col, "xid") {
			xidCols = append(xidCols, col)
			e.xidArg = fmt.Sprint(v)
		}
	}
	if len(xidCols) != 1 {
		t.Fatalf("the read query returns %d xid columns %q, want one: %v", len(xidCols), xidCols, m)
	}
	var err error
	if e.xid, err = strconv.ParseUint(e.xidArg, 10, 64); err != nil {
		t.Fatalf("the read query's %s %q is not a number: %v", xidCols[0], e.xidArg, err)
	}
	var ok bool
	if e.id, ok = m["id"].(int64); !ok {
		t.Fatalf("the read query's id: %T %v", m["id"], m["id"])
	}
	e.typ, _ = m["type"].(string)
	e.gameID, _ = m["game_id"].(string)
	if j, ok := m["job_id"].(int64); ok {
		e.jobID = &j
	}
	if e.typ == "" || e.gameID == "" {
		t.Fatalf("the read query returns no type or game_id: %v", m)
	}
	return e
}

// pageLimit is the LIMIT of the README's read query.
func pageLimit(t testing.TB, read string) int {
	t.Helper()
	m := regexp.MustCompile(`(?i)\bLIMIT\s+(\d+)`).FindStringSubmatch(read)
	if m == nil {
		t.Fatalf("the README's read query has no LIMIT:\n%s", read)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
