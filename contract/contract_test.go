package contract_test

import (
	"encoding/json"
	"math/big"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dlclark/regexp2"

	"github.com/galaxy/rtmanager/contract"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// doc returns a schema file as a generic JSON value (numbers as
// json.Number).
func doc(t testing.TB, path string) any {
	t.Helper()
	v, err := loadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// at follows a path of object keys and array indexes in v.
func at(t testing.TB, v any, path ...any) any {
	t.Helper()
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %v", path, path[:i])
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("%v: no %q at %v", path, k, path[:i])
			}
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("%v: no item %d at %v", path, k, path[:i])
			}
			v = a[k]
		}
	}
	return v
}

func strs(t testing.TB, v any) []string {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("%v is not an array", v)
	}
	out := make([]string, len(a))
	for i, x := range a {
		if out[i], ok = x.(string); !ok {
			t.Fatalf("%v is not an array of strings", v)
		}
	}
	return out
}

func keysOf(t testing.TB, v any) []string {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not an object", v)
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

func asStrings[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

func sameSet(t testing.TB, what string, schema, goside []string) {
	t.Helper()
	a, b := slices.Sorted(slices.Values(schema)), slices.Sorted(slices.Values(goside))
	if !slices.Equal(a, b) {
		t.Errorf("%s: the schema has %q, the Go code %q", what, a, b)
	}
}

// TestSchemasCompile: every file is a draft 2020-12 schema whose $id is
// its path under BaseURI, and compiles with its references resolved.
func TestSchemasCompile(t *testing.T) {
	t.Parallel()
	if err := compiled(); err != nil {
		t.Fatal(err)
	}
	files := contract.Files()
	if len(files) < 13 {
		t.Fatalf("only %d schema files: %q", len(files), files)
	}
	for _, path := range files {
		d := doc(t, path)
		if got := at(t, d, "$schema"); got != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %v", path, got)
		}
		if got := at(t, d, "$id"); got != contract.ID(path) {
			t.Errorf("%s: $id %v, want %s", path, got, contract.ID(path))
		}
	}
}

// TestEverythingHasASchema: one payload schema per job kind, one schema
// per event type, and nothing else.
func TestEverythingHasASchema(t *testing.T) {
	t.Parallel()
	var jobs, events []string
	for _, path := range contract.Files() {
		switch {
		case path == contract.JobRowFile || path == contract.DefsFile:
		case strings.HasPrefix(path, "jobs/"):
			jobs = append(jobs, strings.TrimSuffix(strings.TrimPrefix(path, "jobs/"), ".schema.json"))
		case strings.HasPrefix(path, "events/"):
			events = append(events, strings.TrimSuffix(strings.TrimPrefix(path, "events/"), ".schema.json"))
		default:
			t.Errorf("unexpected schema file %s", path)
		}
	}
	sameSet(t, "job payload schemas", jobs, asStrings(job.AllKinds()))
	sameSet(t, "event schemas", events, asStrings(outbox.AllTypes()))
}

// TestEnumsMatchGo: the schemas' enumerations are the Go constants, so a
// kind, status or reason added in Go without the schema fails here.
func TestEnumsMatchGo(t *testing.T) {
	t.Parallel()
	defs := at(t, doc(t, contract.DefsFile), "$defs")
	sameSet(t, "reasons", strs(t, at(t, defs, "reason", "enum")), asStrings(outbox.AllReasons()))
	sameSet(t, "runtime statuses", strs(t, at(t, defs, "runtimeStatus", "enum")), asStrings(runtime.AllStatuses()))
	var final []string
	for _, s := range job.AllStatuses() {
		if s.IsFinal() {
			final = append(final, string(s))
		}
	}
	sameSet(t, "job event statuses", strs(t, at(t, defs, "jobPayload", "properties", "status", "enum")), final)
	row := doc(t, contract.JobRowFile)
	sameSet(t, "row kinds", strs(t, at(t, row, "properties", "kind", "enum")), asStrings(job.AllKinds()))
	// The row picks the payload schema of each kind.
	var picked []string
	for i := range job.AllKinds() {
		k := at(t, row, "allOf", i, "if", "properties", "kind", "const").(string)
		if ref := at(t, row, "allOf", i, "then", "properties", "payload", "$ref"); ref != k+".schema.json" {
			t.Errorf("row: kind %s takes payload %v", k, ref)
		}
		picked = append(picked, k)
	}
	sameSet(t, "row payload choices", picked, asStrings(job.AllKinds()))
	// Each event type's schema pins the status its Go constructor gives it.
	for _, st := range runtime.AllStatuses() {
		typ := transitionType(t, st)
		d := doc(t, contract.EventFile(string(typ)))
		if got := at(t, d, "properties", "to_status", "const"); got != string(st) {
			t.Errorf("%s: to_status const %v, want %s", typ, got, st)
		}
		if got := at(t, d, "properties", "record", "properties", "status", "const"); got != string(st) {
			t.Errorf("%s: record.status const %v, want %s", typ, got, st)
		}
	}
	for _, st := range job.AllStatuses() {
		if !st.IsFinal() {
			continue
		}
		ev, err := outbox.ForJobOutcome(1, "g1", "h", "start", st, 1, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := at(t, doc(t, contract.EventFile(string(ev.Type))), "properties", "status", "const"); got != string(st) {
			t.Errorf("%s: status const %v, want %s", ev.Type, got, st)
		}
	}
}

// jsonFields returns the JSON names of a struct's fields and those
// without omitempty (always present).
func jsonFields(v any) (all, always []string) {
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, opts, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	return all, always
}

// TestPropertiesMatchGo: every schema names exactly the fields of its Go
// type, and an event schema requires exactly the fields Go always writes.
func TestPropertiesMatchGo(t *testing.T) {
	t.Parallel()
	payloads := map[job.Kind]any{
		job.KindStart: job.StartPayload{}, job.KindStop: job.StopPayload{}, job.KindRestart: job.RestartPayload{},
		job.KindRemove: job.RemovePayload{}, job.KindChangeImage: job.ChangeImagePayload{},
	}
	for k, v := range payloads {
		d := doc(t, contract.JobPayloadFile(string(k)))
		var props []string
		if p, ok := d.(map[string]any)["properties"]; ok {
			props = keysOf(t, p)
		}
		all, _ := jsonFields(v)
		sameSet(t, string(k)+" payload fields", props, all)
		if at(t, d, "additionalProperties") != false {
			t.Errorf("%s: unknown keys must be refused", k)
		}
	}
	defs := at(t, doc(t, contract.DefsFile), "$defs")
	limits, _ := jsonFields(job.Limits{})
	sameSet(t, "limits fields", keysOf(t, at(t, defs, "limits", "properties")), limits)

	events := map[string]any{
		"runtimePayload": outbox.RuntimePayload{}, "record": outbox.RecordSnapshot{}, "jobPayload": outbox.JobPayload{},
	}
	for name, v := range events {
		all, always := jsonFields(v)
		sameSet(t, name+" fields", keysOf(t, at(t, defs, name, "properties")), all)
		sameSet(t, name+" required", strs(t, at(t, defs, name, "required")), always)
	}
	orphan := doc(t, contract.EventFile(string(outbox.TypeContainerOrphaned)))
	all, always := jsonFields(outbox.OrphanPayload{})
	sameSet(t, "orphan fields", keysOf(t, at(t, orphan, "properties")), all)
	sameSet(t, "orphan required", strs(t, at(t, orphan, "required")), always)

	// The row's columns are those the Game Master's role may insert.
	roles, err := os.ReadFile("../deploy/sql/roles.sql")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`GRANT INSERT \(([^)]*)\) ON jobs TO :"gm_role"`).FindSubmatch(roles)
	if m == nil {
		t.Fatal("roles.sql grants the Game Master no INSERT on jobs")
	}
	var cols []string
	for _, c := range strings.Split(string(m[1]), ",") {
		cols = append(cols, strings.TrimSpace(c))
	}
	sameSet(t, "row columns", keysOf(t, at(t, doc(t, contract.JobRowFile), "properties")), cols)
}

func num(t testing.TB, v any) *big.Rat {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v is not a number", v)
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		t.Fatalf("%v is not a number", v)
	}
	return r
}

// TestBoundsMatchConstants: every bound the schemas state is the Go
// constant the agent's validation uses.
func TestBoundsMatchConstants(t *testing.T) {
	t.Parallel()
	defs := at(t, doc(t, contract.DefsFile), "$defs")
	check := func(what string, v any, want int64) {
		t.Helper()
		if got := num(t, v); got.Cmp(new(big.Rat).SetInt64(want)) != 0 {
			t.Errorf("%s: the schema says %s, the Go constant is %d", what, got.RatString(), want)
		}
	}
	check("game id length", at(t, defs, "gameId", "maxLength"), int64(job.MaxGameIDLength))
	check("image ref length", at(t, defs, "imageRef", "maxLength"), job.MaxImageRefBytes)
	check("env count", at(t, defs, "env", "maxProperties"), job.MaxEnvVars)
	check("env name length", at(t, defs, "env", "propertyNames", "maxLength"), job.MaxEnvNameBytes)
	check("env value length", at(t, defs, "env", "additionalProperties", "maxLength"), job.MaxEnvValueBytes)
	check("state_dir length", at(t, defs, "stateDir", "maxLength"), job.MaxStateDirBytes)
	check("stop timeout minimum", at(t, defs, "timeoutSeconds", "minimum"), 0)
	check("stop timeout maximum", at(t, defs, "timeoutSeconds", "maximum"), job.MaxStopTimeoutSeconds)
	check("stop timeout default", at(t, defs, "timeoutSeconds", "x-agent-default"), job.DefaultStopTimeoutSeconds)
	check("ready timeout minimum", at(t, defs, "readyTimeoutSeconds", "minimum"), job.MinReadyTimeoutSeconds)
	check("ready timeout maximum", at(t, defs, "readyTimeoutSeconds", "maximum"), job.MaxReadyTimeoutSeconds)
	check("ready timeout default", at(t, defs, "readyTimeoutSeconds", "x-agent-default"), job.DefaultReadyTimeoutSeconds)
	hc := at(t, defs, "healthcheck", "properties")
	check("healthcheck arguments", at(t, hc, "command", "maxItems"), job.MaxHealthcheckArgs)
	check("healthcheck argument length", at(t, hc, "command", "items", "maxLength"), job.MaxHealthcheckArgBytes)
	check("healthcheck program length", at(t, hc, "command", "prefixItems", 0, "maxLength"), job.MaxHealthcheckArgBytes)
	for _, d := range []struct {
		name string
		hi   int64
	}{{"interval_ms", job.MaxHealthcheckMillis}, {"timeout_ms", job.MaxHealthcheckMillis}, {"start_period_ms", job.MaxHealthcheckStartPeriodMillis}} {
		check("healthcheck "+d.name+" minimum", at(t, hc, d.name, "anyOf", 1, "minimum"), job.MinHealthcheckMillis)
		check("healthcheck "+d.name+" maximum", at(t, hc, d.name, "anyOf", 1, "maximum"), d.hi)
	}
	check("healthcheck retries maximum", at(t, hc, "retries", "maximum"), job.MaxHealthcheckRetries)
	for _, l := range []struct {
		name               string
		lo, hi, defaultVal int64
	}{
		{"memory_bytes", job.MinMemoryBytes, job.MaxMemoryBytes, job.DefaultMemoryBytes},
		{"nano_cpus", job.MinNanoCPUs, job.MaxNanoCPUs, job.DefaultNanoCPUs},
		{"pids_limit", job.MinPidsLimit, job.MaxPidsLimit, job.DefaultPidsLimit},
	} {
		p := at(t, defs, "limits", "properties", l.name)
		check(l.name+" minimum", at(t, p, "anyOf", 1, "minimum"), l.lo)
		check(l.name+" maximum", at(t, p, "anyOf", 1, "maximum"), l.hi)
		check(l.name+" default", at(t, p, "x-agent-default"), l.defaultVal)
	}
	for _, k := range job.AllKinds() {
		check(string(k)+" payload size", at(t, doc(t, contract.JobPayloadFile(string(k))), "x-max-payload-bytes"), job.MaxPayloadBytes)
	}
	row := doc(t, contract.JobRowFile)
	check("max_attempts minimum", at(t, row, "properties", "max_attempts", "minimum"), 0)
	check("max_attempts maximum", at(t, row, "properties", "max_attempts", "maximum"), job.MaxAttemptsLimit)
	check("job event error length", at(t, defs, "jobPayload", "properties", "error", "maxLength"), outbox.MaxErrorBytes)

	// Bounds inside patterns, by behaviour.
	stateDir, elem := schema(t, contract.DefsFile+"#/$defs/stateDir"), strings.Repeat("e", job.MaxStateDirElementBytes)
	if err := stateDir.Validate("g1/" + elem); err != nil {
		t.Errorf("a state_dir element of %d bytes is refused: %v", len(elem), err)
	}
	if err := stateDir.Validate("g1/" + elem + "e"); err == nil {
		t.Errorf("a state_dir element of %d bytes is accepted", len(elem)+1)
	}
	env := schema(t, contract.DefsFile+"#/$defs/env")
	for _, name := range []string{job.ReservedEnvPrefix + "X", strings.ToLower(job.ReservedEnvPrefix) + "x", "Rtm_", "rTM_A"} {
		if err := env.Validate(map[string]any{name: "1"}); err == nil {
			t.Errorf("reserved env name %q is accepted", name)
		}
	}
}

// TestPatternsAreECMAScript: JSON Schema patterns are ECMA-262 regular
// expressions; every pattern compiles as one and means what Go's RE2
// reads in it, on every string of the samples and on probes near each
// pattern's edges (strings ending in a newline aside: some engines,
// .NET's like regexp2 and Python's, let "$" match before a final
// newline).
func TestPatternsAreECMAScript(t *testing.T) {
	t.Parallel()
	var patterns []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && k == "pattern" {
					patterns = append(patterns, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	for _, path := range contract.Files() {
		walk(doc(t, path))
	}
	probes := []string{"", "g1", "g1/x", "./g1/", "g1/..", "A_1", "RTM_X", "rtm_", " ", "\t", "x y", "\x00", "é",
		"nginx", "a/b:c", "localhost:5000/a@sha256:" + strings.Repeat("ab", 32), "[::1]:1/a", "A.b-C/d", "UPPER"}
	for _, s := range loadSamples(t) {
		var walkStrings func(v any)
		walkStrings = func(v any) {
			switch x := v.(type) {
			case string:
				probes = append(probes, x)
			case map[string]any:
				for k, c := range x {
					probes = append(probes, k)
					walkStrings(c)
				}
			}
		}
		var v any
		if json.Unmarshal(s.Payload, &v) == nil {
			walkStrings(v)
		}
	}
	for _, p := range patterns {
		ecma, err := regexp2.Compile(p, regexp2.ECMAScript)
		if err != nil {
			t.Errorf("pattern %q is not ECMAScript: %v", p, err)
			continue
		}
		re2 := regexp.MustCompile(p)
		for _, s := range probes {
			if strings.HasSuffix(s, "\n") {
				continue
			}
			want := re2.MatchString(s)
			if got, err := ecma.MatchString(s); err != nil || got != want {
				t.Errorf("pattern %q on %q: ECMAScript %v (%v), RE2 %v", p, s, got, err, want)
			}
		}
	}
	if len(patterns) < 8 {
		t.Fatalf("only %d patterns found", len(patterns))
	}
}
