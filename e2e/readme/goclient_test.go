package readme_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/sqlcheck"
)

// exampleFile holds the Examples whose marked regions the README shows.
const exampleFile = "rtmclient/example_test.go"

// exampleRegions returns the regions of exampleFile between "// README
// begin" and "// README end", with the function body's indentation (one
// tab) taken off.
func exampleRegions(t testing.TB) []string {
	t.Helper()
	var out []string
	var cur []string
	in := false
	for i, line := range strings.Split(readFile(t, exampleFile), "\n") {
		switch strings.TrimSpace(line) {
		case "// README begin":
			if in {
				t.Fatalf("%s:%d: README begin inside a region", exampleFile, i+1)
			}
			in, cur = true, nil
			continue
		case "// README end":
			if !in {
				t.Fatalf("%s:%d: README end outside a region", exampleFile, i+1)
			}
			in = false
			out = append(out, strings.TrimRight(strings.Join(cur, "\n"), "\n"))
			continue
		}
		if in {
			cur = append(cur, strings.TrimPrefix(line, "\t"))
		}
	}
	if in {
		t.Fatalf("%s: a README region is not closed", exampleFile)
	}
	return out
}

// TestReadmeGoIsAnExample: every ```go block of the Game Master contract
// is, verbatim, a marked region of an Example in rtmclient, which `go test
// ./rtmclient` compiles and runs against a real database and checks
// against its output; and every marked region is in the README.
func TestReadmeGoIsAnExample(t *testing.T) {
	regions := exampleRegions(t)
	shown := make([]bool, len(regions))
	for _, b := range contractBlocks(t, "go") {
		text := strings.TrimRight(b.text, "\n")
		found := false
		for i, r := range regions {
			if r == text {
				found, shown[i] = true, true
			}
		}
		if !found {
			t.Errorf("README.md:%d: this ```go block is not a marked region of %s (it must be, verbatim, so that it compiles and runs); %s",
				b.line, exampleFile, firstDifference(text, regions))
		}
	}
	for i, r := range regions {
		if !shown[i] {
			t.Errorf("%s: a README region is in no ```go block of the README's %q section:\n%s", exampleFile, contractSection, r)
		}
	}
}

// firstDifference names the first line where text departs from the
// closest region, for a failure message that says what to fix.
func firstDifference(text string, regions []string) string {
	best, bestLine, bestAt := "", "", -1
	tl := strings.Split(text, "\n")
	for _, r := range regions {
		rl := strings.Split(r, "\n")
		n := 0
		for n < len(tl) && n < len(rl) && tl[n] == rl[n] {
			n++
		}
		if n > bestAt {
			bestAt = n
			best, bestLine = "", ""
			if n < len(tl) {
				best = tl[n]
			}
			if n < len(rl) {
				bestLine = rl[n]
			}
		}
	}
	if bestAt < 0 {
		return "there is no marked region"
	}
	return "line " + strconv.Itoa(bestAt+1) + " of the block reads\n\t" + best + "\nwhere the example has\n\t" + bestLine
}

// TestDocumentedSQLSortsByNoCast plans every ```sql statement of the
// README and the deploy guide and fails on a sort by a cast, the bug of
// issue 13 (queries/ has its own check in internal/db).
func TestDocumentedSQLSortsByNoCast(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if casts, err := sqlcheck.CastSortKeys(ctx, conn, oldReadQuery); err != nil || len(casts) == 0 {
		t.Fatalf("negative control: the check does not see the old README query's sort by text: %q, %v", casts, err)
	}
	n := 0
	for _, file := range []string{"README.md", "deploy/README.md"} {
		for _, b := range parseMarkdown(readFile(t, file)) {
			if b.lang != "sql" {
				continue
			}
			for _, stmt := range sqlcheck.Split(b.text) {
				n++
				casts, err := sqlcheck.CastSortKeys(ctx, conn, stmt)
				if err != nil {
					t.Errorf("%s:%d: plan %q: %v", file, b.line, stmt, err)
				} else if len(casts) > 0 {
					t.Errorf("%s:%d: sorts by a cast %q (a bare ORDER BY name means the output column first): qualify the column with its table\n%s", file, b.line, casts, stmt)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no SQL found in the README")
	}
}
