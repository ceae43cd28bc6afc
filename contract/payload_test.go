package contract_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// sample is one job payload of testdata/payloads.json.
type sample struct {
	Name      string          `json:"name"`
	Kind      string          `json:"kind"`
	GameID    string          `json:"game_id"`
	Payload   json.RawMessage `json:"payload"`
	Valid     bool            `json:"valid"`
	Exception string          `json:"exception"`
}

func loadSamples(t testing.TB) []sample {
	t.Helper()
	b, err := os.ReadFile("testdata/payloads.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Samples []sample `json:"samples"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	for i := range file.Samples {
		if file.Samples[i].GameID == "" {
			file.Samples[i].GameID = "g1"
		}
	}
	return file.Samples
}

// checkSample asserts a sample's verdicts: the agent's is want, and the
// schema's is the same unless exception names why not.
func checkSample(t *testing.T, s sample) {
	t.Helper()
	exception, ok, agentErr := compare(t, s.Kind, s.GameID, s.Payload)
	if !ok {
		return
	}
	if (agentErr == nil) != s.Valid {
		t.Errorf("%s %q: the agent says %v, the sample says valid=%v", s.Kind, s.Name, agentErr, s.Valid)
	}
	if exception != s.Exception {
		t.Errorf("%s %q: the schema and the agent differ by exception %q, the sample says %q (agent: %v)", s.Kind, s.Name, exception, s.Exception, agentErr)
	}
}

// TestPayloadSamples: every sample of testdata/payloads.json gets the
// verdict it states from the agent, and the same from the schema but for
// the listed exceptions.
func TestPayloadSamples(t *testing.T) {
	t.Parallel()
	samples := loadSamples(t)
	kinds := map[string]int{}
	for _, s := range samples {
		checkSample(t, s)
		if s.Valid {
			kinds[s.Kind]++
		}
	}
	for _, k := range job.AllKinds() {
		if kinds[string(k)] == 0 {
			t.Errorf("no valid sample of kind %s", k)
		}
	}
}

// TestPayloadBounds puts every bound's value, and one past it, into a
// payload: the agent and the schema agree on each.
func TestPayloadBounds(t *testing.T) {
	t.Parallel()
	const img = `"image_ref": "galaxy/engine:1"`
	start := func(extra string) string { return "{" + img + ", " + extra + "}" }
	var samples []sample
	add := func(kind, name, payload string, valid bool) {
		samples = append(samples, sample{Name: name, Kind: kind, GameID: "g1", Payload: json.RawMessage(payload), Valid: valid})
	}
	limits := []struct {
		name             string
		minimum, maximum int64
	}{
		{"memory_bytes", job.MinMemoryBytes, job.MaxMemoryBytes},
		{"nano_cpus", job.MinNanoCPUs, job.MaxNanoCPUs},
		{"pids_limit", job.MinPidsLimit, job.MaxPidsLimit},
	}
	for _, l := range limits {
		for v, valid := range map[int64]bool{0: true, -1: false, l.minimum: true, l.minimum - 1: l.minimum-1 == 0, l.maximum: true, l.maximum + 1: false} {
			for _, kind := range []string{"start", "change_image"} {
				add(kind, fmt.Sprintf("%s %d", l.name, v), start(fmt.Sprintf(`"limits": {%q: %d}`, l.name, v)), valid)
			}
		}
	}
	for _, kind := range []string{"stop", "restart"} {
		for v, valid := range map[int]bool{0: true, job.MaxStopTimeoutSeconds: true, job.MaxStopTimeoutSeconds + 1: false, -1: false} {
			add(kind, fmt.Sprintf("timeout %d", v), fmt.Sprintf(`{"timeout_seconds": %d}`, v), valid)
		}
	}
	for _, kind := range []string{"start", "change_image", "restart"} {
		for v, valid := range map[int]bool{0: false, job.MinReadyTimeoutSeconds: true, job.MaxReadyTimeoutSeconds: true, job.MaxReadyTimeoutSeconds + 1: false, -1: false} {
			raw := fmt.Sprintf(`{"ready_timeout_seconds": %d}`, v)
			if kind != "restart" {
				raw = start(fmt.Sprintf(`"ready_timeout_seconds": %d`, v))
			}
			add(kind, fmt.Sprintf("ready timeout %d", v), raw, valid)
		}
	}
	hc := func(members string) string { return start(`"healthcheck": {"command": ["/engine"]` + members + `}`) }
	for _, d := range []struct {
		name string
		hi   int
	}{{"interval_ms", job.MaxHealthcheckMillis}, {"timeout_ms", job.MaxHealthcheckMillis}, {"start_period_ms", job.MaxHealthcheckStartPeriodMillis}} {
		for v, valid := range map[int]bool{0: true, -1: false, job.MinHealthcheckMillis - 1: false, job.MinHealthcheckMillis: true, d.hi: true, d.hi + 1: false} {
			for _, kind := range []string{"start", "change_image"} {
				add(kind, fmt.Sprintf("healthcheck %s %d", d.name, v), hc(fmt.Sprintf(`, %q: %d`, d.name, v)), valid)
			}
		}
	}
	for v, valid := range map[int]bool{0: true, 1: true, -1: false, job.MaxHealthcheckRetries: true, job.MaxHealthcheckRetries + 1: false} {
		add("start", fmt.Sprintf("healthcheck retries %d", v), hc(fmt.Sprintf(`, "retries": %d`, v)), valid)
	}
	args := func(n, size int) string {
		a := make([]string, n)
		for i := range a {
			a[i] = fmt.Sprintf("%q", strings.Repeat("a", size))
		}
		return start(`"healthcheck": {"command": [` + strings.Join(a, ", ") + `]}`)
	}
	add("start", "healthcheck arguments at the bound", args(job.MaxHealthcheckArgs, 1), true)
	add("start", "healthcheck arguments over the bound", args(job.MaxHealthcheckArgs+1, 1), false)
	add("start", "healthcheck argument at the bound", args(1, job.MaxHealthcheckArgBytes), true)
	add("start", "healthcheck argument over the bound", args(1, job.MaxHealthcheckArgBytes+1), false)
	env := func(n int) string {
		vars := make([]string, n)
		for i := range vars {
			vars[i] = fmt.Sprintf(`"V%d": "x"`, i)
		}
		return `"env": {` + strings.Join(vars, ", ") + `}`
	}
	add("start", "env at the count bound", start(env(job.MaxEnvVars)), true)
	add("start", "env over the count bound", start(env(job.MaxEnvVars+1)), false)
	add("start", "env name at the bound", start(fmt.Sprintf(`"env": {%q: ""}`, strings.Repeat("N", job.MaxEnvNameBytes))), true)
	add("start", "env name over the bound", start(fmt.Sprintf(`"env": {%q: ""}`, strings.Repeat("N", job.MaxEnvNameBytes+1))), false)
	add("start", "env value at the bound", start(fmt.Sprintf(`"env": {"V": %q}`, strings.Repeat("v", job.MaxEnvValueBytes))), true)
	add("start", "env value over the bound", start(fmt.Sprintf(`"env": {"V": %q}`, strings.Repeat("v", job.MaxEnvValueBytes+1))), false)
	dir := func(n int) string { return "g1/" + strings.Repeat("d", n-3) }
	add("start", "state_dir at the bound", start(fmt.Sprintf(`"state_dir": %q`, dir(job.MaxStateDirBytes))), false) // its element is over the bound
	long := "g1/" + strings.Repeat(strings.Repeat("e", job.MaxStateDirElementBytes)+"/", 3)
	long += strings.Repeat("f", job.MaxStateDirBytes-len(long))
	add("start", "state_dir of the longest elements at the bound", start(fmt.Sprintf(`"state_dir": %q`, long)), true)
	add("start", "state_dir over the bound", start(fmt.Sprintf(`"state_dir": %q`, long+"f")), false)
	add("start", "state_dir element at the bound", start(fmt.Sprintf(`"state_dir": "g1/%s"`, strings.Repeat("e", job.MaxStateDirElementBytes))), true)
	add("start", "state_dir element over the bound", start(fmt.Sprintf(`"state_dir": "g1/%s"`, strings.Repeat("e", job.MaxStateDirElementBytes+1))), false)
	tag := strings.Repeat("t", 128)
	add("start", "image tag at the bound", fmt.Sprintf(`{"image_ref": "engine:%s"}`, tag), true)
	ref := "registry.example.com/" + strings.Repeat("r", job.MaxImageRefBytes)
	add("start", "image ref over the bound", fmt.Sprintf(`{"image_ref": %q}`, ref), false)
	// The game id names the directory: at its longest, state_dir is too.
	longGame := strings.Repeat("g", job.MaxGameIDLength)
	samples = append(samples, sample{Name: "longest game id", Kind: "start", GameID: longGame, Valid: true,
		Payload: json.RawMessage(start(fmt.Sprintf(`"state_dir": "%s/x"`, longGame)))})

	for _, s := range samples {
		checkSample(t, s)
	}
}

// TestPayloadExceptions shows each listed exception: a payload the schema
// accepts and the agent refuses, for the reason named.
func TestPayloadExceptions(t *testing.T) {
	t.Parallel()
	const img = `"image_ref": "galaxy/engine:1"`
	pathAt := func(n int) string { return "registry.example.com/" + strings.Repeat("p", n) + ":1" }
	cases := []struct {
		name, kind, payload, exception string
	}{
		{"timeout with a fraction", "stop", `{"timeout_seconds": 5.0}`, exIntegerNotation},
		{"limit with an exponent", "start", `{` + img + `, "limits": {"pids_limit": 1e2}}`, exIntegerNotation},
		{"env value of multi-byte characters", "start", fmt.Sprintf(`{%s, "env": {"V": %q}}`, img, strings.Repeat("é", job.MaxEnvValueBytes)), exEnvValueBytes},
		{"image path over 255 once normalized", "start", fmt.Sprintf(`{"image_ref": %q}`, strings.Repeat("n", 250)), exImagePathLength},
		{"image path over 255", "start", fmt.Sprintf(`{"image_ref": %q}`, pathAt(256)), exImagePathLength},
		{"payload over the size bound", "start", fmt.Sprintf(`{%s, "env": {%s}}`, img, manyValues(9, job.MaxEnvValueBytes)), exPayloadBytes},
		{"duplicate key", "stop", `{"timeout_seconds": 5, "timeout_seconds": 6}`, exDuplicateKey},
		{"invalid UTF-8", "start", "{" + img + `, "env": {"V": "` + "\xff" + `"}}`, exInvalidUTF8},
		{"state_dir of another game", "start", `{` + img + `, "state_dir": "g2/saves"}`, exStateDirGame},
	}
	for _, c := range cases {
		exception, ok, agentErr := compare(t, c.kind, "g1", []byte(c.payload))
		if ok && exception != c.exception {
			t.Errorf("%s: exception %q, want %q (agent: %v)", c.name, exception, c.exception, agentErr)
		}
	}
	// And the bound of each is where the agent says: one less passes.
	for _, p := range []string{
		fmt.Sprintf(`{"image_ref": %q}`, strings.Repeat("n", 255-len("library/"))),
		fmt.Sprintf(`{"image_ref": %q}`, pathAt(255)),
		fmt.Sprintf(`{%s, "env": {"V": %q}}`, img, strings.Repeat("é", job.MaxEnvValueBytes/2)),
	} {
		if err := agentDecode("start", "g1", []byte(p)); err != nil {
			t.Errorf("payload %q: %v", truncate([]byte(p)), err)
		}
	}
}

// manyValues returns n env members of size bytes each.
func manyValues(n, size int) string {
	vars := make([]string, n)
	for i := range vars {
		vars[i] = fmt.Sprintf(`"V%d": %q`, i, strings.Repeat("x", size))
	}
	return strings.Join(vars, ", ")
}

// fuzzSeeds are FuzzDecode's seeds (internal/domain/job) and the samples.
func fuzzSeeds(t testing.TB) [][3]string {
	digest := strings.Repeat("0123456789abcdef", 4)
	seeds := [][3]string{
		{"start", "g1", `{"image_ref":"registry.example.com/galaxy/engine:1.4","env":{"A":"1"},"limits":{"memory_bytes":1073741824},"state_dir":"g1/a/b"}`},
		{"start", "g1", `{"image_ref":"registry.example.com/galaxy/engine:1.4","state_dir":"../../etc"}`},
		{"start", "g-2", `{"image_ref":"galaxy/engine@sha256:` + digest + `"}`},
		{"change_image", "g1", `{"image_ref":"nginx:1.25","env":{"RTM_X":"1"}}`},
		{"stop", "g1", `{"timeout_seconds":5}`},
		{"restart", "g1", `null`},
		{"remove", "g1", ``},
		{"remove", "G1", `{} {}`},
		{"start", "g1", `{"IMAGE_REF":"x","image_ref":"y"}`},
		{"stop", "g1", `{"timeout_seconds":[[[[[[[[[[[1]]]]]]]]]]]}`},
	}
	for _, s := range loadSamples(t) {
		seeds = append(seeds, [3]string{s.Kind, s.GameID, string(s.Payload)})
	}
	return seeds
}

// FuzzPayload: for any job, what the agent accepts the schema accepts,
// and what the schema accepts and the agent refuses is a listed
// exception. Run it with go test -fuzz FuzzPayload ./contract/.
func FuzzPayload(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s[0], s[1], []byte(s[2]))
	}
	f.Fuzz(func(t *testing.T, kind, gameID string, raw []byte) {
		if job.ValidateGameID(gameID) != nil {
			return // the row's game_id, not the payload: see TestRowSamples
		}
		compare(t, kind, gameID, raw)
	})
}

// TestPayloadMutations is a generated fuzz that every go test runs: it
// mutates the samples at random (fixed seed) by replacing values with
// others of every JSON type and near every bound, adding and removing
// keys, and checks each result both ways as FuzzPayload does.
func TestPayloadMutations(t *testing.T) {
	t.Parallel()
	n := 4000
	if testing.Short() {
		n = 500
	}
	if s := os.Getenv("RTM_CONTRACT_MUTATIONS"); s != "" {
		if v, err := strconv.Atoi(s); err == nil {
			n = v
		}
	}
	rng := rand.New(rand.NewPCG(13, 2026))
	samples := loadSamples(t)
	accepted, exceptions := 0, map[string]int{}
	for i := 0; i < n; i++ {
		s := samples[rng.IntN(len(samples))]
		dec := json.NewDecoder(bytes.NewReader(s.Payload))
		dec.UseNumber() // keep the samples' number notation
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		for range 1 + rng.IntN(3) {
			v = mutate(rng, v, 0)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		kind := s.Kind
		if rng.IntN(10) == 0 {
			kind = string(job.AllKinds()[rng.IntN(len(job.AllKinds()))])
		}
		exception, ok, agentErr := compare(t, kind, s.GameID, raw)
		if !ok {
			continue
		}
		if agentErr == nil {
			accepted++
		}
		if exception != "" {
			exceptions[exception]++
		}
	}
	t.Logf("%d mutated payloads: %d accepted by both, exceptions %v", n, accepted, exceptions)
	if accepted == 0 || accepted == n {
		t.Fatalf("the mutations are all accepted or all refused (%d of %d): they test nothing", accepted, n)
	}
}

// interesting are replacement values: every JSON type, and values near
// the bounds and the patterns.
var interesting = []any{
	nil, true, false, 0, -1, 1, 0.5, 5.0, json.Number("1e3"), "", " ", "x", "\n", "é",
	json.Number(strconv.FormatInt(job.MinMemoryBytes, 10)), json.Number(strconv.FormatInt(job.MaxMemoryBytes+1, 10)),
	json.Number(strconv.FormatInt(job.MinNanoCPUs-1, 10)), json.Number(strconv.FormatInt(job.MaxNanoCPUs, 10)),
	job.MaxPidsLimit, job.MaxPidsLimit + 1, job.MaxStopTimeoutSeconds, job.MaxStopTimeoutSeconds + 1,
	"g1", "g1/x", "g2", "./g1/", "g1/..", "g1/.x", "/g1", "g1/" + strings.Repeat("e", job.MaxStateDirElementBytes+1),
	"RTM_X", "rtm_y", "A=B", "_ok", "9x",
	"nginx", "nginx:latest", "Nginx", "localhost:5000/a/b:c", "a@sha256:" + strings.Repeat("ab", 32), strings.Repeat("ab", 32),
	strings.Repeat("v", job.MaxEnvValueBytes+1), strings.Repeat("é", job.MaxEnvValueBytes/2+1),
	[]any{}, []any{"x"}, map[string]any{}, map[string]any{"A": "1"},
}

// pick returns a fresh copy of an interesting value, so that no two
// places share (and a mutation never nests) one object.
func pick(rng *rand.Rand) any {
	raw, err := json.Marshal(interesting[rng.IntN(len(interesting))])
	if err != nil {
		panic(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		panic(err)
	}
	return v
}

var keys = []string{"image_ref", "env", "limits", "state_dir", "timeout_seconds", "memory_bytes", "nano_cpus", "pids_limit", "A", "RTM_Z", "Image_Ref", "x"}

// mutate changes one place of v: in an object, it adds, removes or
// mutates a member; anything else is replaced.
func mutate(rng *rand.Rand, v any, depth int) any {
	x, ok := v.(map[string]any)
	if !ok || depth > 3 {
		return pick(rng)
	}
	// Sorted, so that the fixed seed gives the same run.
	names := slices.Sorted(maps.Keys(x))
	switch r := rng.IntN(6); {
	case r == 0 || len(names) == 0:
		x[keys[rng.IntN(len(keys))]] = pick(rng)
	case r == 1:
		delete(x, names[rng.IntN(len(names))])
	default:
		k := names[rng.IntN(len(names))]
		x[k] = mutate(rng, x[k], depth+1)
	}
	return x
}
