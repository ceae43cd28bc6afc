package engine

// Tests that need no Docker daemon.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/moby/moby/client"
)

func TestCheckSpec(t *testing.T) {
	d := &Docker{hostID: "h1"}
	good := ContainerSpec{GameID: "g", Name: "galaxy-game-g", Image: "img:1", StatePath: "/srv/state/g"}
	if err := d.checkSpec(&good); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	if good.HostID != "h1" || good.StateMountTarget != DefaultStateMountTarget {
		t.Errorf("defaults not filled: %+v", good)
	}
	for name, mutate := range map[string]func(*ContainerSpec){
		"other host":      func(s *ContainerSpec) { s.HostID = "h2" },
		"relative state":  func(s *ContainerSpec) { s.StatePath = "state/g" },
		"dotdot state":    func(s *ContainerSpec) { s.StatePath = "/srv/state/../../etc" },
		"no game":         func(s *ContainerSpec) { s.GameID = "" },
		"no image":        func(s *ContainerSpec) { s.Image = "" },
		"negative limit":  func(s *ContainerSpec) { s.MemoryBytes = -1 },
		"reserved label":  func(s *ContainerSpec) { s.Labels = map[string]string{LabelHost: "h2"} },
		"root as target":  func(s *ContainerSpec) { s.StateMountTarget = "/" },
		"unclean target":  func(s *ContainerSpec) { s.StateMountTarget = "/state/../etc" },
		"empty name":      func(s *ContainerSpec) { s.Name = "" },
		"empty statepath": func(s *ContainerSpec) { s.StatePath = "" },
	} {
		s := ContainerSpec{GameID: "g", Name: "n", Image: "i", StatePath: "/s"}
		mutate(&s)
		if err := d.checkSpec(&s); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
}

func TestNanoTimestamp(t *testing.T) {
	if got := nanoTimestamp(1_700_000_000_000_000_123); got != "1700000000.000000123" {
		t.Errorf("nanoTimestamp = %s", got)
	}
}

// fakeDaemon serves /_ping and /events on a unix socket in a temp dir, like
// a daemon that stops after sending two events.
func fakeDaemon(t *testing.T, eventsHandler http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		_, _ = io.WriteString(w, "OK")
	})
	mux.HandleFunc("/v1.41/events", eventsHandler)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

func TestEventsStreamEnds(t *testing.T) {
	var query atomic.Value
	host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		query.Store(r.URL.Query())
		w.Header().Set("Content-Type", "application/json")
		for i, action := range []string{"start", "die"} {
			fmt.Fprintf(w, `{"Type":"container","Action":%q,"Actor":{"ID":"c1","Attributes":{"exitCode":"%d","%s":"g1"}},"time":1700000000,"timeNano":%d}`+"\n",
				action, 137, LabelGame, 1_700_000_000_000_000_000+int64(i))
		}
		// Returning closes the stream: what a stopping daemon does.
	})
	d, err := New(Options{Host: host, HostID: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	var got []Event
	err = d.Events(t.Context(), EventsOptions{SinceNano: 1_700_000_000_000_000_000}, func(ev Event) { got = append(got, ev) })
	if !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Events = %v, want ErrStreamEnded", err)
	}
	if len(got) != 2 || got[0].Action != "start" || got[1].Action != "die" || got[1].ID != "c1" ||
		got[1].TimeNano != 1_700_000_000_000_000_001 || got[1].GameID() != "g1" {
		t.Errorf("events = %+v", got)
	}
	if code, ok := got[1].ExitCode(); !ok || code != 137 {
		t.Errorf("exit code = %d, %v", code, ok)
	}

	q, _ := query.Load().(url.Values)
	var filters map[string]map[string]bool
	if err := json.Unmarshal([]byte(first(q["filters"])), &filters); err != nil {
		t.Fatalf("filters %q: %v", q["filters"], err)
	}
	want := map[string][]string{
		"type":  {"container"},
		"label": {LabelManaged + "=true", LabelHost + "=h1"},
		"event": DefaultEventActions(),
	}
	for term, values := range want {
		if len(filters[term]) != len(values) {
			t.Errorf("filter %s = %v, want %v", term, filters[term], values)
		}
		for _, v := range values {
			if !filters[term][v] {
				t.Errorf("filter %s lacks %q: %v", term, v, filters[term])
			}
		}
	}
	if s := first(q["since"]); s != "1700000000.000000000" {
		t.Errorf("since = %q", s)
	}
}

func TestEventsUntilEndsCleanly(t *testing.T) {
	host := fakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
	})
	d, err := New(Options{Host: host, HostID: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Events(t.Context(), EventsOptions{SinceNano: 1, UntilNano: 2}, func(Event) {}); err != nil {
		t.Errorf("Events with Until = %v, want nil", err)
	}
}

func TestWrapTransport(t *testing.T) {
	host := fakeDaemon(t, func(http.ResponseWriter, *http.Request) {})
	var calls atomic.Int64
	d, err := New(Options{Host: host, HostID: "h1", WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			return rt.RoundTrip(r)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if calls.Load() == 0 {
		t.Error("wrapped transport not used")
	}
	if d.APIVersion() != "1.41" {
		t.Errorf("negotiated API version = %s, want 1.41", d.APIVersion())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// TestPingNegotiatesTheVersion: the engine speaks the daemon's API version
// when it is older than the SDK's, the SDK's when the daemon's is newer,
// and refuses a daemon older than the SDK supports (API 1.40).
func TestPingNegotiatesTheVersion(t *testing.T) {
	for daemon, want := range map[string]string{
		"1.41": "1.41", // Docker 20.10
		"1.45": "1.45", // Docker 26.1
		"1.99": client.MaxAPIVersion,
		"1.39": "", // Docker 19.03: refused
	} {
		sock := filepath.Join(t.TempDir(), "docker.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Api-Version", daemon)
			_, _ = io.WriteString(w, "OK")
		})}
		go func() { _ = srv.Serve(ln) }()
		d, err := New(Options{Host: "unix://" + sock, HostID: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		err = d.Ping(t.Context())
		switch {
		case want == "" && (err == nil || !strings.Contains(err.Error(), client.MinAPIVersion)):
			t.Errorf("daemon API %s: Ping = %v, want a refusal naming the minimum %s", daemon, err, client.MinAPIVersion)
		case want != "" && (err != nil || d.APIVersion() != want):
			t.Errorf("daemon API %s: Ping = %v, speaks %s; want %s", daemon, err, d.APIVersion(), want)
		}
		_ = d.Close()
		_ = srv.Close()
	}
}
