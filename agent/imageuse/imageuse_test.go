package imageuse

import (
	"testing"
	"time"
)

func TestKey(t *testing.T) {
	for ref, want := range map[string]string{
		"nginx":                           "docker.io/library/nginx:latest",
		"docker.io/library/nginx:1.25":    "docker.io/library/nginx:1.25",
		"127.0.0.1:5000/galaxy/engine":    "127.0.0.1:5000/galaxy/engine:latest",
		"galaxy/engine:1@sha256:" + hex64: "docker.io/galaxy/engine@sha256:" + hex64,
	} {
		if got := Key(ref); got != want {
			t.Errorf("Key(%s) = %s, want %s", ref, got, want)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestUseAndRemove(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := New(func() time.Time { return now })
	release := g.Use("nginx")
	if _, ok := g.TryRemove([]string{"docker.io/library/nginx:latest", "nginx:1"}); ok {
		t.Fatal("TryRemove of an image a job holds succeeded")
	}
	if got := g.LastUsed([]string{"nginx:latest"}); !got.Equal(now) {
		t.Fatalf("LastUsed while held = %v", got)
	}
	now = now.Add(time.Hour)
	release()
	release() // twice is harmless
	if got := g.LastUsed([]string{"nginx:latest", "other"}); !got.Equal(now) {
		t.Fatalf("LastUsed after release = %v, want %v", got, now)
	}
	done, ok := g.TryRemove([]string{"nginx"})
	if !ok {
		t.Fatal("TryRemove of a released image refused")
	}
	if _, ok := g.TryRemove([]string{"nginx"}); ok {
		t.Fatal("a second TryRemove during a removal succeeded")
	}
	// A job that wants the image waits until the removal is over.
	used := make(chan func())
	go func() { used <- g.Use("docker.io/library/nginx") }()
	select {
	case <-used:
		t.Fatal("Use returned during the removal")
	case <-time.After(50 * time.Millisecond): // a negative check: nothing may happen
	}
	done()
	(<-used)()
	var nilGuard *Guard
	nilGuard.Use("x")()
	if d, ok := nilGuard.TryRemove([]string{"x"}); !ok {
		t.Fatal("a nil guard refused")
	} else {
		d()
	}
}
