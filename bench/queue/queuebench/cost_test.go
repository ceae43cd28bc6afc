package queuebench

import (
	"testing"
	"time"
)

func TestLiteral(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, c := range []struct {
		in   any
		want string
	}{
		{"it's", `'it''s'`},
		{int32(8), "8"},
		{int64(30000), "30000"},
		{nil, "NULL"},
		{(*time.Time)(nil), "NULL"},
		{&at, "'2024-05-06T07:08:09Z'"},
		{[]string(nil), "NULL"},
		{[]string{`a"b`, "c'd"}, `'{"a\"b","c''d"}'`},
	} {
		got, err := literal(c.in)
		if err != nil || got != c.want {
			t.Errorf("literal(%#v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := literal(1.5); err == nil {
		t.Error("literal(1.5): no error for an argument it cannot render")
	}
}

func TestKeyLines(t *testing.T) {
	plan := `Update on jobs  (cost=1..2 rows=8 width=1) (actual time=0.1..0.2 rows=8 loops=1)
  Buffers: shared hit=57 dirtied=2
  ->  Limit
        Buffers: shared hit=10
Planning Time: 0.9 ms
Execution Time: 0.694 ms
`
	if got, want := keyLines(plan), "0.69 ms, shared hit=57 dirtied=2"; got != want {
		t.Errorf("keyLines = %q, want %q", got, want)
	}
	if got := keyLines(""); got != "—" {
		t.Errorf("keyLines of nothing = %q", got)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
