package sqlcheck

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	script := `-- register once
INSERT INTO c (name) VALUES ('a;b') ON CONFLICT (name) DO NOTHING;
SELECT "x;y", $$ ; $$, $t$ ; $t$ FROM c /* ; */ WHERE name = 'it''s;';
-- ... read, process ...
UPDATE c SET n = $1 -- trailing ; comment
WHERE name = 'a';
-- only a comment;
`
	got := Split(script)
	want := []string{
		"-- register once\nINSERT INTO c (name) VALUES ('a;b') ON CONFLICT (name) DO NOTHING",
		`SELECT "x;y", $$ ; $$, $t$ ; $t$ FROM c /* ; */ WHERE name = 'it''s;'`,
		"-- ... read, process ...\nUPDATE c SET n = $1 -- trailing ; comment\nWHERE name = 'a'",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Split:\n got %q\nwant %q", got, want)
	}
}

func TestIsCast(t *testing.T) {
	for key, want := range map[string]bool{
		"((outbox.xid)::text)":       true,
		"(outbox.xid)::text DESC":    true,
		"x::text NULLS FIRST":        true,
		"outbox.xid":                 false,
		"outbox.id DESC":             false,
		"(unnest(($1)::text[]))":     false,
		"(lower((r.game_id)::text))": false,
		"(COALESCE(a, (b)::bigint))": false,
	} {
		if got := isCast(key); got != want {
			t.Errorf("isCast(%q) = %v, want %v", key, got, want)
		}
	}
	if got := splitTopLevel("((outbox.xid)::text), outbox.id, f(a, b)"); !slices.Equal(got, []string{"((outbox.xid)::text)", "outbox.id", "f(a, b)"}) {
		t.Errorf("splitTopLevel: %q", got)
	}
}
