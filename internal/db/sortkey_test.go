package db_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/sqlcheck"
)

// sqlcMacro matches sqlc's named parameters, sqlc.arg(name) and
// sqlc.narg(name), and sqlc.embed(table).
var sqlcMacro = regexp.MustCompile(`sqlc\.(arg|narg|embed)\(\s*([A-Za-z_][A-Za-z_0-9]*)\s*\)`)

// plainSQL turns a sqlc query into one PostgreSQL can prepare: each named
// parameter becomes a numbered one (the same name, the same number) and
// sqlc.embed(t) becomes t.*.
func plainSQL(query string) string {
	numbers := map[string]int{}
	highest := 0
	for _, m := range regexp.MustCompile(`\$(\d+)`).FindAllStringSubmatch(query, -1) {
		if n, _ := strconv.Atoi(m[1]); n > highest {
			highest = n
		}
	}
	return sqlcMacro.ReplaceAllStringFunc(query, func(s string) string {
		m := sqlcMacro.FindStringSubmatch(s)
		if m[1] == "embed" {
			return m[2] + ".*"
		}
		if _, ok := numbers[m[2]]; !ok {
			highest++
			numbers[m[2]] = highest
		}
		return "$" + strconv.Itoa(numbers[m[2]])
	})
}

// TestNoQuerySortsByACast plans every statement of queries/ and fails on a
// sort by a cast: PostgreSQL resolves a bare ORDER BY name to an output
// column first, so `SELECT xid::text … ORDER BY xid` sorts by text and a
// gap-free reader built on it loses events (issue 13).
func TestNoQuerySortsByACast(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// The check itself sees the bug, and does not see its fix.
	bad := `SELECT id, xid::text, type FROM outbox WHERE (xid, id) > ($1::xid8, $2::bigint) ORDER BY xid, id LIMIT 100`
	if casts, err := sqlcheck.CastSortKeys(ctx, conn, bad); err != nil || len(casts) != 1 {
		t.Fatalf("the check misses the sort by text of the old README query: %q, %v", casts, err)
	}
	good := strings.Replace(bad, "ORDER BY xid, id", "ORDER BY outbox.xid, outbox.id", 1)
	if casts, err := sqlcheck.CastSortKeys(ctx, conn, good); err != nil || len(casts) != 0 {
		t.Fatalf("the check flags a sort by the stored xid: %q, %v", casts, err)
	}

	files, err := filepath.Glob("../../queries/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no queries found: %v", err)
	}
	checked := 0
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range sqlcheck.Split(string(src)) {
			name := filepath.Base(file)
			if m := regexp.MustCompile(`-- name: (\w+)`).FindStringSubmatch(stmt); m != nil {
				name += " " + m[1]
			}
			casts, err := sqlcheck.CastSortKeys(ctx, conn, plainSQL(stmt))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if len(casts) > 0 {
				t.Errorf("%s sorts by a cast %q: qualify the ORDER BY column with its table, or sort by the stored column", name, casts)
			}
			checked++
		}
	}
	t.Logf("%d statements of queries/ planned", checked)
}
