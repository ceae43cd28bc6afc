// Command engine is a stand-in game engine for tests, `rtmanager dev` and
// the demo. It is built as a static binary and imported as a one-file image
// by package engineimage; it uses the standard library only.
//
// `/engine healthcheck` is its health check command (HEALTHCHECK CMD):
// it asks its own /healthz on 127.0.0.1 and exits 0 on 200, 1 otherwise,
// printing the answer.
//
// It serves HTTP on :8080 (`/healthz` → 200, `/` → JSON with the game id),
// writes /state/engine-started on start (if it can) once its signal
// handling is set up — so a test can wait for that file before stopping it —
// and exits 0 promptly on SIGTERM or SIGINT.
//
// Environment knobs:
//
//	GAME_ID                 reported by `/`
//	ENGINE_ADDR             listen address (default ":8080")
//	ENGINE_STATE_DIR        state directory (default "/state")
//	ENGINE_EXIT_AFTER       Go duration: exit by itself after it …
//	ENGINE_EXIT_CODE        … with this code (default 0)
//	ENGINE_IGNORE_SIGTERM=1 ignore SIGTERM (to test stop timeouts/SIGKILL)
//	ENGINE_ALLOC_MB         allocate and touch this many MiB at start (OOM tests)
//	ENGINE_HEALTH           what /healthz answers: "" (always 200),
//	                        "after:<duration>" (503, then 200 from then on),
//	                        "never" (503), "flap:<duration>" (alternates)
//	ENGINE_HOSTILE_OUTPUT=1 before exiting by itself, print ~10 MB to stdout
//	                        (a 1 MiB line among them), then terminal escape
//	                        sequences, control characters and invalid UTF-8 to
//	                        stderr (crash report tests)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck())
	}
	gameID := os.Getenv("GAME_ID")
	started := time.Now().UTC()
	hostname, _ := os.Hostname()

	if os.Getenv("ENGINE_IGNORE_SIGTERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	sigs := make(chan os.Signal, 1)
	if os.Getenv("ENGINE_IGNORE_SIGTERM") == "1" {
		signal.Notify(sigs, syscall.SIGINT)
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}

	if mb, err := strconv.Atoi(os.Getenv("ENGINE_ALLOC_MB")); err == nil && mb > 0 {
		hog = make([][]byte, 0, mb)
		for range mb {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			hog = append(hog, b)
		}
	}

	writeState(gameID, started)

	mux := http.NewServeMux()
	healthy := healthMode(os.Getenv("ENGINE_HEALTH"), started)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := healthy(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + why + "\n"))
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"game_id":    gameID,
			"hostname":   hostname,
			"started_at": started.Format(time.RFC3339Nano),
		})
	})
	addr := os.Getenv("ENGINE_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ListenAndServe() }()

	var exitAfter <-chan time.Time
	if d, err := time.ParseDuration(os.Getenv("ENGINE_EXIT_AFTER")); err == nil && d >= 0 {
		exitAfter = time.After(d)
	}

	code := 0
	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "engine: %s, exiting\n", s)
	case <-exitAfter:
		code, _ = strconv.Atoi(os.Getenv("ENGINE_EXIT_CODE"))
		if os.Getenv("ENGINE_HOSTILE_OUTPUT") == "1" {
			hostileOutput()
		}
		fmt.Fprintf(os.Stderr, "engine: ENGINE_EXIT_AFTER elapsed, exiting with %d\n", code)
	case err := <-serveErr:
		fmt.Fprintf(os.Stderr, "engine: serve: %v\n", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = srv.Shutdown(ctx)
	cancel()
	os.Exit(code)
}

// hog keeps ENGINE_ALLOC_MB alive.
var hog [][]byte

func writeState(gameID string, started time.Time) {
	dir := os.Getenv("ENGINE_STATE_DIR")
	if dir == "" {
		dir = "/state"
	}
	body := fmt.Sprintf("game_id=%s\nstarted_at=%s\npid=%d\n", gameID, started.Format(time.RFC3339Nano), os.Getpid())
	tmp := filepath.Join(dir, ".engine-started.tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return // not writable: fine
	}
	_ = os.Rename(tmp, filepath.Join(dir, "engine-started"))
}

// hostileOutput prints what a crash report must survive: volume, one
// endless line, escape sequences, control characters, invalid UTF-8.
func hostileOutput() {
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	filler := strings.Repeat("x", 990)
	for i := range 10_000 {
		fmt.Fprintf(out, "%06d %s\n", i, filler)
	}
	fmt.Fprintf(out, "long %s\n", strings.Repeat("y", 1<<20))
	fmt.Fprint(out, "stdout last \x1b[2J\x1b]0;pwned\x07 words\n")
	_ = out.Flush()
	// Docker copies each stream on its own: let it drain the stdout pipe
	// so that the streams keep their order in the log.
	time.Sleep(500 * time.Millisecond)
	fmt.Fprint(os.Stderr, "\x1b[31mred\x1b[0m \xff\xfe invalid \u202e rtl \x00 nul \\ backslash\n")
}

// healthMode returns what /healthz answers under ENGINE_HEALTH.
func healthMode(mode string, started time.Time) func() (bool, string) {
	kind, arg, _ := strings.Cut(mode, ":")
	d, _ := time.ParseDuration(arg)
	switch kind {
	case "after":
		return func() (bool, string) { return time.Since(started) >= d, "warming up" }
	case "never":
		return func() (bool, string) { return false, "never healthy (ENGINE_HEALTH=never)" }
	case "flap":
		if d <= 0 {
			d = time.Second
		}
		return func() (bool, string) { return (time.Since(started)/d)%2 == 0, "flapping" }
	}
	return func() (bool, string) { return true, "" }
}

// healthcheck is the HEALTHCHECK command.
func healthcheck() int {
	addr := os.Getenv("ENGINE_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	_, port, _ := strings.Cut(addr, ":")
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		fmt.Println("healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	fmt.Printf("%d %s", resp.StatusCode, body[:n])
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
