package contract_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/contract"
	"github.com/galaxy/rtmanager/rtmclient"
)

// rowRequest turns a jobs row (a JSON object of its columns) into the
// request rtmclient validates before it inserts. ok is false for a row
// rtmclient cannot express (a column the agents own).
func rowRequest(t testing.TB, row map[string]any) (rtmclient.JobRequest, bool) {
	t.Helper()
	var req rtmclient.JobRequest
	kind := ""
	for col, v := range row {
		s, _ := v.(string)
		switch col {
		case "host_id":
			req.HostID = s
		case "game_id":
			req.GameID = s
		case "kind":
			kind = s
		case "payload":
		case "idempotency_key":
			req.IdempotencyKey = s
		case "traceparent": // rtmclient takes it from the context
		case "max_attempts":
			switch n := v.(type) {
			case int:
				req.MaxAttempts = n
			case float64:
				req.MaxAttempts = int(n)
			}
		case "run_after":
			at, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return req, false
			}
			req.RunAfter = at
		default:
			return req, false
		}
	}
	raw := []byte("{}")
	if p, ok := row["payload"]; ok {
		var err error
		if raw, err = json.Marshal(p); err != nil {
			t.Fatal(err)
		}
	}
	req.Payload = rtmclient.RawPayload{JobKind: rtmclient.Kind(kind), JSON: raw}
	return req, true
}

// TestRowSamples: a jobs row is schema-valid exactly when rtmclient (the
// Go client, which checks what the agent checks but the allow-list)
// accepts it, but for the payload exceptions and columns the agents own.
func TestRowSamples(t *testing.T) {
	t.Parallel()
	base := func() map[string]any {
		return map[string]any{"host_id": "host-a", "game_id": "g1", "kind": "start",
			"payload": map[string]any{"image_ref": "registry.example.com/galaxy/engine:1.4"}}
	}
	with := func(f func(r map[string]any)) map[string]any {
		r := base()
		f(r)
		return r
	}
	cases := []struct {
		name      string
		row       map[string]any
		valid     bool
		exception string
	}{
		{"minimal start", base(), true, ""},
		{"every column", with(func(r map[string]any) {
			r["idempotency_key"] = "start-g1-7"
			r["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			r["max_attempts"] = 3
			r["run_after"] = "2026-03-01T12:00:00Z"
		}), true, ""},
		{"stop without payload", map[string]any{"host_id": "h", "game_id": "g1", "kind": "stop"}, true, ""},
		{"remove with null payload", map[string]any{"host_id": "h", "game_id": "g1", "kind": "remove", "payload": nil}, true, ""},
		{"start without payload", map[string]any{"host_id": "h", "game_id": "g1", "kind": "start"}, false, ""},
		{"max_attempts 0", with(func(r map[string]any) { r["max_attempts"] = 0 }), true, ""},
		{"max_attempts at the bound", with(func(r map[string]any) { r["max_attempts"] = 100 }), true, ""},
		{"max_attempts over the bound", with(func(r map[string]any) { r["max_attempts"] = 101 }), false, ""},
		{"max_attempts negative", with(func(r map[string]any) { r["max_attempts"] = -1 }), false, ""},
		{"no host", with(func(r map[string]any) { delete(r, "host_id") }), false, ""},
		{"blank host", with(func(r map[string]any) { r["host_id"] = " \t" }), false, ""},
		{"no game", with(func(r map[string]any) { delete(r, "game_id") }), false, ""},
		{"bad game id", with(func(r map[string]any) { r["game_id"] = "../etc" }), false, ""},
		{"game id too long", with(func(r map[string]any) { r["game_id"] = strings.Repeat("g", 52) }), false, ""},
		{"game id at the bound", with(func(r map[string]any) { r["game_id"] = strings.Repeat("g", 51) }), true, ""},
		{"unknown kind", with(func(r map[string]any) { r["kind"] = "format_disk" }), false, ""},
		{"payload of another kind", with(func(r map[string]any) { r["kind"] = "stop" }), false, ""},
		{"blank idempotency key", with(func(r map[string]any) { r["idempotency_key"] = "  " }), false, ""},
		{"empty idempotency key", with(func(r map[string]any) { r["idempotency_key"] = "" }), true, ""},
		{"state_dir of the row's game", with(func(r map[string]any) {
			r["payload"].(map[string]any)["state_dir"] = "g1/saves"
		}), true, ""},
		{"state_dir of another game", with(func(r map[string]any) {
			r["payload"].(map[string]any)["state_dir"] = "g2/saves"
		}), false, exStateDirGame},
	}
	for _, c := range cases {
		schemaErr := validateValue(t, contract.JobRowFile, c.row)
		req, ok := rowRequest(t, c.row)
		if !ok {
			t.Fatalf("%s: rtmclient cannot express the row", c.name)
		}
		_, clientErr := rtmclient.Validate(req)
		if (clientErr == nil) != c.valid {
			t.Errorf("%s: rtmclient says %v, want valid=%v", c.name, clientErr, c.valid)
		}
		want := c.valid || c.exception != ""
		if (schemaErr == nil) != want {
			t.Errorf("%s: the schema says %v, want valid=%v", c.name, schemaErr, want)
		}
		if c.exception != "" {
			raw, _ := json.Marshal(c.row["payload"])
			if got := classify(agentDecode(c.row["kind"].(string), c.row["game_id"].(string), raw)); got != c.exception {
				t.Errorf("%s: exception %q, want %q", c.name, got, c.exception)
			}
		}
	}
	// Columns the agents own are not the Game Master's to write.
	for _, col := range []string{"status", "attempt", "lease_owner", "last_error", "finished_at", "id"} {
		row := with(func(r map[string]any) { r[col] = "x" })
		if err := validateValue(t, contract.JobRowFile, row); err == nil {
			t.Errorf("a row setting %s is accepted", col)
		}
	}
}
