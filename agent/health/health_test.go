package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestReadyzSaysWhatIsWrong(t *testing.T) {
	var dbDown atomic.Bool
	checks := []Check{
		{"database", func(context.Context) error {
			if dbDown.Load() {
				return errors.New("cannot reach PostgreSQL")
			}
			return nil
		}},
		{"events stream", func(context.Context) error { return nil }},
	}
	srv := httptest.NewServer(Handler(checks, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "# metrics\n")
	})))
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "ok   database") {
		t.Fatalf("/readyz ready: %d %q", code, body)
	}
	dbDown.Store(true)
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL database: cannot reach PostgreSQL") || !strings.Contains(body, "ok   events stream") {
		t.Fatalf("/readyz unready: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || body != "# metrics\n" {
		t.Fatalf("/metrics: %d %q", code, body)
	}
}

func TestChecksAreBounded(t *testing.T) {
	res := Run(context.Background(), []Check{{"hung", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}})
	if !errors.Is(res[0].Err, context.DeadlineExceeded) {
		t.Fatalf("a hung check was not cut off: %v", res[0].Err)
	}
}
