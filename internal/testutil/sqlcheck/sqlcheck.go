// Package sqlcheck helps tests run and check SQL text that lives outside
// Go code: statements copied from the README, and the files of queries/.
package sqlcheck

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Split cuts a script into its statements at the semicolons outside
// quotes, comments and dollar quotes, and returns each statement trimmed,
// without its semicolon. Parts that hold only comments are left out.
func Split(script string) []string {
	var out []string
	start := 0
	flush := func(end int) {
		if s := strings.TrimSpace(script[start:end]); !onlyComments(s) {
			out = append(out, s)
		}
	}
	for i := 0; i < len(script); i++ {
		switch c := script[i]; {
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			i = skipPast(script, i, "\n") - 1
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			i = skipPast(script, i+2, "*/") - 1
		case c == '\'' || c == '"':
			i = skipPast(script, i+1, string(c)) - 1
		case c == '$':
			if tag := dollarTag.FindString(script[i:]); tag != "" {
				i = skipPast(script, i+len(tag), tag) - 1
			}
		case c == ';':
			flush(i)
			start = i + 1
		}
	}
	flush(len(script))
	return out
}

var dollarTag = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z_0-9]*)?\$`)

// skipPast returns the index just after the first end at or after i, or
// len(s). A doubled quote inside a quoted string is skipped as a pair.
func skipPast(s string, i int, end string) int {
	for {
		j := strings.Index(s[i:], end)
		if j < 0 {
			return len(s)
		}
		i += j + len(end)
		if (end == "'" || end == `"`) && strings.HasPrefix(s[i:], end) {
			i++
			continue
		}
		return i
	}
}

func onlyComments(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
			return false
		}
	}
	return true
}

// CastSortKeys returns the sort keys of stmt's generic plan that are casts,
// such as ((outbox.xid)::text): a sort by a cast orders by the cast's type
// (text sorts "1000" before "999"), which is what a bare ORDER BY name
// means when the select list has an output column of that name. The
// statement is only planned (EXPLAIN, no ANALYZE), in a transaction that
// is rolled back; its $n parameters keep their inferred types.
func CastSortKeys(ctx context.Context, conn *pgx.Conn, stmt string) ([]string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = tx.Rollback(ctx)
		// A prepared statement outlives the transaction; gone or not, the
		// name must be free for the next call.
		_, _ = conn.Exec(ctx, "DEALLOCATE rtm_sqlcheck")
	}()
	// The generic plan keeps parameters as parameters, so NULL arguments
	// below cannot fold the query away.
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
		return nil, fmt.Errorf("set plan_cache_mode: %w", err)
	}
	if _, err := tx.Exec(ctx, "PREPARE rtm_sqlcheck AS "+stmt); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	var params int
	if err := tx.QueryRow(ctx,
		"SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = 'rtm_sqlcheck'").Scan(&params); err != nil {
		return nil, fmt.Errorf("count parameters: %w", err)
	}
	explain := "EXPLAIN (VERBOSE) EXECUTE rtm_sqlcheck"
	if params > 0 {
		explain += "(" + strings.TrimSuffix(strings.Repeat("NULL, ", params), ", ") + ")"
	}
	rows, err := tx.Query(ctx, explain)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	var casts []string
	for _, line := range lines {
		_, keys, ok := strings.Cut(line, "Sort Key: ")
		if !ok {
			_, keys, ok = strings.Cut(line, "Presorted Key: ")
		}
		if !ok {
			continue
		}
		for _, key := range splitTopLevel(keys) {
			if isCast(key) {
				casts = append(casts, key)
			}
		}
	}
	return casts, nil
}

// splitTopLevel cuts a plan's key list at the commas outside parentheses.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

var sortSuffix = regexp.MustCompile(`(?i)(\s+(DESC|ASC|NULLS FIRST|NULLS LAST|USING \S+))+$`)

// isCast reports whether a sort key, as EXPLAIN prints it, is a cast at
// its top level: ((outbox.xid)::text) is, (unnest(($1)::text[])) is not.
func isCast(key string) bool {
	key = sortSuffix.ReplaceAllString(strings.TrimSpace(key), "")
	for len(key) > 1 && key[0] == '(' && closing(key, 0) == len(key)-1 {
		key = key[1 : len(key)-1]
	}
	depth := 0
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ':':
			if depth == 0 && strings.HasPrefix(key[i:], "::") {
				return true
			}
		}
	}
	return false
}

// closing returns the index of the parenthesis that closes the one at i.
func closing(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}
