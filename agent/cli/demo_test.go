package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/galaxy/rtmanager/agent/config"
)

// TestDemoReadsTheDevBanner keeps `rtmanager demo` and the banner of
// `rtmanager dev` in step: the demo finds the database, the health
// endpoints and the engine image there.
func TestDemoReadsTheDevBanner(t *testing.T) {
	var b bytes.Buffer
	cfg := &config.Config{
		DatabaseURL: "postgres://postgres@/rtmanager?host=%2Ftmp%2Fx&sslmode=disable",
		HTTPAddr:    "127.0.0.1:41739", HostID: "demo-1", StateRoot: "/tmp/x/state", DockerNetwork: "galaxy-dev",
	}
	printDevBanner(&b, cfg, "/tmp/x", "rtmanager-engine:0123456789abcdef", "http://127.0.0.1:41740   (actions on: token)")
	if !strings.Contains(b.String(), "Watch what happened:") {
		t.Fatalf("the demo waits for \"Watch what happened:\", which the banner lacks:\n%s", b.String())
	}
	got := parseBanner(b.String())
	for key, want := range map[string]string{
		"database":     cfg.DatabaseURL,
		"http":         "http://127.0.0.1:41739",
		"engine image": "rtmanager-engine:0123456789abcdef",
		"host id":      "demo-1",
		"console":      "http://127.0.0.1:41740",
	} {
		if got[key] != want {
			t.Errorf("%s: got %q, want %q\n%s", key, got[key], want, b.String())
		}
	}
}

func TestDemoIsHidden(t *testing.T) {
	r := runCLI(context.Background(), "--help")
	if strings.Contains(r.stdout, "demo") {
		t.Fatalf("demo is listed:\n%s", r.stdout)
	}
	if r := runCLI(context.Background(), "demo", "extra"); r.code != ExitUsage {
		t.Fatalf("demo with an argument: exit %d: %s", r.code, r.stderr)
	}
}
