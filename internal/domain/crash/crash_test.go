package crash

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":             "plain text",
		"tab\tkept":              "tab\tkept",
		"\x1b[31mred\x1b[0m":     `\x1b[31mred\x1b[0m`,
		"bell\a nul\x00 del\x7f": `bell\x07 nul\x00 del\x7f`,
		"bad \xff\xfe utf8":      `bad \xff\xfe utf8`,
		"back\\slash":            `back\\slash`,
		"c1 \u009b csi":          `c1 \u009b csi`,
		"rtl \u202e evil":        `rtl \u202e evil`,
		"héllo wörld ✓":          "héllo wörld ✓",
		"cr\rmid":                `cr\x0dmid`,
	} {
		got := Sanitize(in)
		if got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("Sanitize(%q) is not valid UTF-8", in)
		}
	}
}

func FuzzSanitize(f *testing.F) {
	f.Add("\x1b]0;title\a\xff")
	f.Fuzz(func(t *testing.T, s string) {
		got := Sanitize(s)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8: %q", got)
		}
		for _, r := range got {
			if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) {
				t.Fatalf("control %U left in %q", r, got)
			}
		}
	})
}

func TestCollectorKeepsTheLastLinesOfBothStreamsInOrder(t *testing.T) {
	c := NewCollector(Limits{Lines: 3, Bytes: 1024})
	out, errw := c.Writer(Stdout), c.Writer(Stderr)
	_, _ = out.Write([]byte("one\ntwo\n"))
	_, _ = errw.Write([]byte("three\n"))
	_, _ = out.Write([]byte("fo"))
	_, _ = out.Write([]byte("ur\nfive"))
	got := c.Output()
	want := []Line{{Stderr, "three"}, {Stdout, "four"}, {Stdout, "five"}}
	if len(got.Lines) != len(want) {
		t.Fatalf("lines = %+v, want %+v", got.Lines, want)
	}
	for i := range want {
		if got.Lines[i] != want[i] {
			t.Fatalf("line %d = %+v, want %+v", i, got.Lines[i], want[i])
		}
	}
	if !got.Truncated {
		t.Error("two lines were dropped but Truncated is false")
	}
}

func TestCollectorBoundsBytes(t *testing.T) {
	c := NewCollector(Limits{Lines: 100, Bytes: 1000})
	w := c.Writer(Stdout)
	for range 1000 {
		_, _ = w.Write([]byte(strings.Repeat("x", 50) + "\x1b\n"))
	}
	_, _ = w.Write([]byte(strings.Repeat("y", 1<<20))) // one long unterminated line
	got := c.Output()
	size := 0
	for _, l := range got.Lines {
		size += len(l.Text)
	}
	if size > 1000 || !got.Truncated || len(got.Lines) == 0 {
		t.Fatalf("kept %d bytes in %d lines (truncated %v), want ≤ 1000 and truncated", size, len(got.Lines), got.Truncated)
	}
	if last := got.Lines[len(got.Lines)-1].Text; !strings.HasPrefix(last, "yyy") {
		t.Fatalf("last line %q, want the end of the long line", last)
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := (Limits{}).Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, l := range []Limits{{Lines: -1}, {Lines: MaxLines + 1}, {Bytes: 10}, {Bytes: MaxBytes + 1}} {
		if l.Validate() == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}
