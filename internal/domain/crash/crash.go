// Package crash defines the crash report of an engine: the last lines it
// printed before an exit no job asked for (an observed die, a reconciled
// exit, an OOM kill). The agent captures them from Docker before the
// transition that reports the exit commits, so nothing of ours can remove
// the container first, and stores them with that transition (table
// crash_reports).
//
// The lines are the engine's own output: untrusted text. They are bounded
// (Limits) and sanitised (Sanitize) before they leave the agent: always
// valid UTF-8, control characters escaped, never interpreted.
package crash

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds of a crash report. The configured limits must lie within them.
const (
	// DefaultLines is how many of the last lines are kept by default.
	DefaultLines = 100
	// MaxLines bounds the configured number of lines.
	MaxLines = 1000
	// DefaultBytes bounds the sanitised lines' total size by default
	// (16 KiB).
	DefaultBytes = 16 << 10
	// MaxBytes bounds the configured total size (256 KiB).
	MaxBytes = 256 << 10
	// MaxReadBytes bounds how much of Docker's log stream one capture
	// reads (the tail of an engine that prints one endless line is still
	// unbounded): past it the capture stops and says it was truncated.
	MaxReadBytes = 32 << 20
	// KeepPerGame is how many crash reports of one game are kept: writing
	// one prunes the game's older ones.
	KeepPerGame = 10
)

// Stream names the output a line came from.
type Stream string

const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Line is one sanitised line of output.
type Line struct {
	Stream Stream `json:"stream"`
	Text   string `json:"text"`
}

// Limits bound a capture.
type Limits struct {
	Lines int // last lines kept; 0 means DefaultLines
	Bytes int // total sanitised bytes kept; 0 means DefaultBytes
}

// WithDefaults fills zero fields.
func (l Limits) WithDefaults() Limits {
	if l.Lines == 0 {
		l.Lines = DefaultLines
	}
	if l.Bytes == 0 {
		l.Bytes = DefaultBytes
	}
	return l
}

// Validate refuses limits outside the bounds.
func (l Limits) Validate() error {
	l = l.WithDefaults()
	if l.Lines < 1 || l.Lines > MaxLines {
		return fmt.Errorf("crash report lines %d: must be 1..%d", l.Lines, MaxLines)
	}
	if l.Bytes < 256 || l.Bytes > MaxBytes {
		return fmt.Errorf("crash report bytes %d: must be 256..%d", l.Bytes, MaxBytes)
	}
	return nil
}

// Output is what a capture got: the last lines, oldest first.
type Output struct {
	Lines []Line
	// Truncated reports that older output, or the start of a long line,
	// was left out.
	Truncated bool
}

// Report is one crash of a game's engine.
type Report struct {
	HostID      string
	GameID      string
	ContainerID string
	ExitCode    *int
	OOM         bool
	// ExitedAt is when the engine exited (the transition's time).
	ExitedAt time.Time
	Output   Output
	// CaptureError says why the lines could not be read (the log driver
	// keeps none, the daemon failed), empty when they were.
	CaptureError string
}

// Sanitize returns s as valid UTF-8 in which nothing is interpreted by a
// terminal or a viewer: invalid bytes become \xNN, C0 controls (tab
// excepted), DEL and C1 controls become \xNN or \u00NN, Unicode
// bidirectional overrides and isolates become \uNNNN, and a backslash
// becomes \\ so that an escape in the output is always ours.
func Sanitize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069,
			r == 0x200e, r == 0x200f, r == 0x061c, r == 0xfeff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Collector gathers demultiplexed output into lines, keeping only what
// Limits allow of the end. Write it through Writer(stream); Docker's frames
// arrive in order, so lines of both streams keep their order.
type Collector struct {
	lim       Limits
	lines     []Line
	size      int // sanitised bytes in lines
	partial   [2][]byte
	truncated bool
	read      int
}

// NewCollector returns a collector bounded by lim (zero fields take the
// defaults).
func NewCollector(lim Limits) *Collector {
	return &Collector{lim: lim.WithDefaults()}
}

type streamWriter struct {
	c *Collector
	s Stream
}

func (w streamWriter) Write(p []byte) (int, error) { return w.c.write(w.s, p) }

// Writer returns the writer for one stream.
func (c *Collector) Writer(s Stream) interface{ Write([]byte) (int, error) } {
	return streamWriter{c: c, s: s}
}

// ErrReadLimit stops a capture that read MaxReadBytes.
var ErrReadLimit = fmt.Errorf("crash report: read %d bytes of output, stopping", MaxReadBytes)

func idx(s Stream) int {
	if s == Stderr {
		return 1
	}
	return 0
}

func (c *Collector) write(s Stream, p []byte) (int, error) {
	n := len(p)
	if c.read+n > MaxReadBytes {
		p = p[:MaxReadBytes-c.read]
	}
	c.read += len(p)
	i := idx(s)
	for len(p) > 0 {
		nl := -1
		for j, ch := range p {
			if ch == '\n' {
				nl = j
				break
			}
		}
		if nl < 0 {
			c.partial[i] = append(c.partial[i], p...)
			// A line longer than the whole budget keeps only its end.
			if over := len(c.partial[i]) - 4*c.lim.Bytes; over > 0 {
				c.partial[i] = append(c.partial[i][:0], c.partial[i][over:]...)
				c.truncated = true
			}
			break
		}
		c.partial[i] = append(c.partial[i], p[:nl]...)
		c.add(s, c.partial[i])
		c.partial[i] = c.partial[i][:0]
		p = p[nl+1:]
	}
	if c.read >= MaxReadBytes {
		c.truncated = true
		return n, ErrReadLimit
	}
	return n, nil
}

func (c *Collector) add(s Stream, raw []byte) {
	text := Sanitize(strings.TrimSuffix(string(raw), "\r"))
	if len(text) > c.lim.Bytes {
		// Keep the end, cut at a rune start (the text is valid UTF-8).
		cut := len(text) - c.lim.Bytes
		for cut < len(text) && !utf8.RuneStart(text[cut]) {
			cut++
		}
		text = text[cut:]
		c.truncated = true
	}
	c.lines = append(c.lines, Line{Stream: s, Text: text})
	c.size += len(text)
	drop := 0
	for len(c.lines)-drop > c.lim.Lines || c.size > c.lim.Bytes {
		c.size -= len(c.lines[drop].Text)
		drop++
		c.truncated = true
	}
	if drop > 0 {
		c.lines = append(c.lines[:0], c.lines[drop:]...)
	}
}

// Output flushes unterminated lines and returns what was kept.
func (c *Collector) Output() Output {
	for _, s := range []Stream{Stdout, Stderr} {
		if p := c.partial[idx(s)]; len(p) > 0 {
			c.add(s, p)
			c.partial[idx(s)] = nil
		}
	}
	return Output{Lines: append([]Line(nil), c.lines...), Truncated: c.truncated}
}
