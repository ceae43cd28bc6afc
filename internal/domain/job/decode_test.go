package job

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testRoot  = "/srv/galaxy/state"
	digestHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	engine    = "registry.example.com/galaxy/engine:1.4"
)

func testPolicy() Policy {
	p := DefaultPolicy()
	p.StateRoot = testRoot
	p.AllowedImages = []string{
		"registry.example.com/galaxy/*",
		"galaxy/engine",
		"nginx:1.25",
		"busybox@sha256:" + digestHex,
		"localhost:5000/engine:*",
		"127.0.0.1:5000/galaxy/*",
	}
	return p
}

// startWith returns a start payload with the allowed engine image and
// extra JSON members.
func startWith(members string) string {
	if members == "" {
		return `{"image_ref":"` + engine + `"}`
	}
	return `{"image_ref":"` + engine + `",` + members + `}`
}

func TestDecodeRefusesHostileJobs(t *testing.T) {
	manyEnv := make([]string, 129)
	for i := range manyEnv {
		manyEnv[i] = fmt.Sprintf(`"V%d":"x"`, i)
	}
	tests := []struct {
		name   string
		kind   string
		gameID string // "g1" when empty and not emptyID
		raw    string
		want   error
		field  string
	}{
		// Kinds.
		{name: "unknown kind", kind: "launch", raw: `{}`, want: ErrUnknownKind, field: "kind"},
		{name: "empty kind", kind: "", raw: `{}`, want: ErrUnknownKind, field: "kind"},
		{name: "uppercase kind", kind: "START", raw: startWith(""), want: ErrUnknownKind, field: "kind"},
		{name: "kind with space", kind: "stop ", raw: `{}`, want: ErrUnknownKind, field: "kind"},
		{name: "kind with SQL", kind: "stop'; DROP TABLE jobs;--", raw: `{}`, want: ErrUnknownKind, field: "kind"},

		// Game ids.
		{name: "empty game id", kind: "stop", gameID: "\x00empty", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id too long", kind: "stop", gameID: strings.Repeat("a", 52), raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id uppercase", kind: "stop", gameID: "Game1", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id slash", kind: "start", gameID: "a/b", raw: startWith(""), want: ErrInvalidGameID, field: "game_id"},
		{name: "game id semicolon", kind: "stop", gameID: "a;rm", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id space", kind: "stop", gameID: "a b", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id dot dot", kind: "start", gameID: "..", raw: startWith(""), want: ErrInvalidGameID, field: "game_id"},
		{name: "game id leading dash", kind: "stop", gameID: "-abc", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id trailing dash", kind: "stop", gameID: "abc-", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id NUL", kind: "stop", gameID: "g\x00", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id newline", kind: "stop", gameID: "g\n1", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id unicode", kind: "stop", gameID: "gämé", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},
		{name: "game id underscore", kind: "stop", gameID: "g_1", raw: `{}`, want: ErrInvalidGameID, field: "game_id"},

		// Payload shape.
		{name: "not JSON", kind: "stop", raw: `not json`, want: ErrInvalidPayload, field: "payload"},
		{name: "array", kind: "stop", raw: `[]`, want: ErrInvalidPayload, field: "payload"},
		{name: "array of objects", kind: "start", raw: `[` + startWith("") + `]`, want: ErrInvalidPayload, field: "payload"},
		{name: "string", kind: "stop", raw: `"x"`, want: ErrInvalidPayload, field: "payload"},
		{name: "number", kind: "remove", raw: `5`, want: ErrInvalidPayload, field: "payload"},
		{name: "oversized", kind: "start", raw: startWith(`"state_dir":"` + strings.Repeat("a", 64<<10) + `"`), want: ErrInvalidPayload, field: "payload"},
		{name: "unknown field", kind: "start", raw: startWith(`"privileged":true`), want: ErrInvalidPayload, field: `"privileged"`},
		{name: "field in other case", kind: "start", raw: `{"IMAGE_REF":"` + engine + `"}`, want: ErrInvalidPayload, field: `"IMAGE_REF"`},
		{name: "duplicate key", kind: "start", raw: `{"image_ref":"` + engine + `","image_ref":"evil/engine"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "duplicate env key", kind: "start", raw: startWith(`"env":{"A":"1","A":"2"}`), want: ErrInvalidPayload, field: `env["A"]`},
		{name: "trailing object", kind: "stop", raw: `{} {}`, want: ErrInvalidPayload, field: "payload"},
		{name: "trailing garbage", kind: "stop", raw: `{}x`, want: ErrInvalidPayload, field: "payload"},
		{name: "invalid UTF-8", kind: "start", raw: startWith(`"env":{"A":"` + "\xff\xfe" + `"}`), want: ErrInvalidPayload, field: "payload"},
		{name: "truncated", kind: "start", raw: `{"image_ref":`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image ref number", kind: "start", raw: `{"image_ref":5}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "deep nesting", kind: "start", raw: startWith(`"env":{"A":[[[[[[[[[[1]]]]]]]]]]}`), want: ErrInvalidPayload, field: `env["A"]`},
		{name: "remove with fields", kind: "remove", raw: `{"timeout_seconds":5}`, want: ErrInvalidPayload, field: `"timeout_seconds"`},
		{name: "stop with image", kind: "stop", raw: startWith(""), want: ErrInvalidPayload, field: `"image_ref"`},
		{name: "change image with state dir", kind: "change_image", raw: startWith(`"state_dir":"x"`), want: ErrInvalidPayload, field: `"state_dir"`},

		// Images.
		{name: "missing image", kind: "start", raw: `{}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "null payload needs image", kind: "start", raw: `null`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "empty payload needs image", kind: "change_image", raw: ``, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image outside allow-list", kind: "start", raw: `{"image_ref":"alpine:3"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "namespace look-alike", kind: "start", raw: `{"image_ref":"registry.example.com/galaxy-evil/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "registry look-alike", kind: "start", raw: `{"image_ref":"registry.example.com.evil.net/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "registry with port look-alike", kind: "start", raw: `{"image_ref":"registry.example.com:444/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "repository prefix look-alike", kind: "start", raw: `{"image_ref":"galaxy/engine-evil:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "tag pattern with digest", kind: "start", raw: `{"image_ref":"nginx:1.25@sha256:` + digestHex + `"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "other tag", kind: "start", raw: `{"image_ref":"nginx:1.26"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "untagged is latest", kind: "start", raw: `{"image_ref":"nginx"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "other digest", kind: "start", raw: `{"image_ref":"busybox@sha256:` + strings.Repeat("f", 64) + `"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "digest pattern by tag", kind: "start", raw: `{"image_ref":"busybox:latest"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "change image not allowed", kind: "change_image", raw: `{"image_ref":"evil/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "pull not allowed", kind: "pull", raw: `{"image_ref":"evil/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "pull needs image", kind: "pull", raw: `{}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "pull with env", kind: "pull", raw: startWith(`"env":{"A":"1"}`), want: ErrInvalidPayload, field: `"env"`},
		{name: "pull with state dir", kind: "pull", raw: startWith(`"state_dir":"g1"`), want: ErrInvalidPayload, field: `"state_dir"`},
		// Look-alike hosts of an allowed loopback registry (127.0.0.1:5000/* is allowed).
		{name: "loopback registry host look-alike", kind: "pull", raw: `{"image_ref":"127.0.0.1:5000.evil.example/galaxy/engine:1"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "loopback registry subdomain look-alike", kind: "start", raw: `{"image_ref":"127.0.0.1.evil.example:5000/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "loopback registry other port", kind: "start", raw: `{"image_ref":"127.0.0.1:50000/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "loopback registry without port", kind: "start", raw: `{"image_ref":"127.0.0.1/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "loopback registry as a path", kind: "start", raw: `{"image_ref":"evil.example/127.0.0.1:5000/galaxy/engine:1"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "loopback registry as a namespace", kind: "start", raw: `{"image_ref":"evil.example/127.0.0.1/galaxy/engine:1"}`, want: ErrImageNotAllowed, field: "image_ref"},
		{name: "uppercase image", kind: "start", raw: `{"image_ref":"Galaxy/Engine"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "empty tag", kind: "start", raw: `{"image_ref":"galaxy/engine:"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image with shell", kind: "start", raw: `{"image_ref":"galaxy/engine:1 ; rm -rf /"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image is an id", kind: "start", raw: `{"image_ref":"` + digestHex + `"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image is a flag", kind: "start", raw: `{"image_ref":"--privileged"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image too long", kind: "start", raw: `{"image_ref":"galaxy/` + strings.Repeat("a", 2000) + `"}`, want: ErrInvalidPayload, field: "image_ref"},
		{name: "image with newline", kind: "start", raw: `{"image_ref":"galaxy/engine\n"}`, want: ErrInvalidPayload, field: "image_ref"},

		// Environment.
		{name: "env name with =", kind: "start", raw: startWith(`"env":{"A=B":"x"}`), want: ErrInvalidEnv, field: `env["A=B"]`},
		{name: "env value newline", kind: "start", raw: startWith(`"env":{"A":"x\nRTM_HOST=evil"}`), want: ErrInvalidEnv, field: `env["A"]`},
		{name: "env value carriage return", kind: "start", raw: startWith(`"env":{"A":"x\r"}`), want: ErrInvalidEnv, field: `env["A"]`},
		{name: "env value NUL", kind: "start", raw: startWith(`"env":{"A":"x\u0000y"}`), want: ErrInvalidEnv, field: `env["A"]`},
		{name: "env reserved", kind: "start", raw: startWith(`"env":{"RTM_X":"1"}`), want: ErrInvalidEnv, field: `env["RTM_X"]`},
		{name: "env reserved lowercase", kind: "change_image", raw: startWith(`"env":{"rtm_x":"1"}`), want: ErrInvalidEnv, field: `env["rtm_x"]`},
		{name: "env leading digit", kind: "start", raw: startWith(`"env":{"1A":"1"}`), want: ErrInvalidEnv, field: `env["1A"]`},
		{name: "env empty name", kind: "start", raw: startWith(`"env":{"":"1"}`), want: ErrInvalidEnv, field: `env[""]`},
		{name: "env name with space", kind: "start", raw: startWith(`"env":{"A B":"1"}`), want: ErrInvalidEnv, field: `env["A B"]`},
		{name: "env name with NUL", kind: "start", raw: startWith(`"env":{"A\u0000":"1"}`), want: ErrInvalidEnv, field: `env["A\x00"]`},
		{name: "env too many", kind: "start", raw: startWith(`"env":{` + strings.Join(manyEnv, ",") + `}`), want: ErrInvalidEnv, field: "env"},
		{name: "env value too long", kind: "start", raw: startWith(`"env":{"A":"` + strings.Repeat("x", 8<<10+1) + `"}`), want: ErrInvalidEnv, field: `env["A"]`},
		{name: "env name too long", kind: "start", raw: startWith(`"env":{"` + strings.Repeat("A", 300) + `":"x"}`), want: ErrInvalidEnv, field: `env["AAAA`},
		{name: "env as string", kind: "start", raw: startWith(`"env":"A=B"`), want: ErrInvalidEnv, field: "env"},
		{name: "env as list", kind: "start", raw: startWith(`"env":["A=B"]`), want: ErrInvalidEnv, field: "env"},
		{name: "env value number", kind: "start", raw: startWith(`"env":{"A":1}`), want: ErrInvalidEnv, field: "env"},

		// Limits.
		{name: "negative memory", kind: "start", raw: startWith(`"limits":{"memory_bytes":-1}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory above max", kind: "start", raw: startWith(`"limits":{"memory_bytes":9663676416}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory below min", kind: "start", raw: startWith(`"limits":{"memory_bytes":1024}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory absurd", kind: "start", raw: startWith(`"limits":{"memory_bytes":1e30}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory int64 overflow", kind: "start", raw: startWith(`"limits":{"memory_bytes":9223372036854775808}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory fractional", kind: "start", raw: startWith(`"limits":{"memory_bytes":1.5}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "memory as string", kind: "start", raw: startWith(`"limits":{"memory_bytes":"8g"}`), want: ErrInvalidLimits, field: "limits.memory_bytes"},
		{name: "negative cpus", kind: "change_image", raw: startWith(`"limits":{"nano_cpus":-1000000000}`), want: ErrInvalidLimits, field: "limits.nano_cpus"},
		{name: "cpus above max", kind: "start", raw: startWith(`"limits":{"nano_cpus":1000000000000}`), want: ErrInvalidLimits, field: "limits.nano_cpus"},
		{name: "cpus below min", kind: "start", raw: startWith(`"limits":{"nano_cpus":1}`), want: ErrInvalidLimits, field: "limits.nano_cpus"},
		{name: "pids unlimited", kind: "start", raw: startWith(`"limits":{"pids_limit":-1}`), want: ErrInvalidLimits, field: "limits.pids_limit"},
		{name: "pids above max", kind: "start", raw: startWith(`"limits":{"pids_limit":1000000}`), want: ErrInvalidLimits, field: "limits.pids_limit"},
		{name: "limits as string", kind: "start", raw: startWith(`"limits":"max"`), want: ErrInvalidLimits, field: "limits"},
		{name: "limits unknown key", kind: "start", raw: startWith(`"limits":{"cpu_shares":1}`), want: ErrInvalidLimits, field: `limits."cpu_shares"`},
		{name: "limits other case", kind: "start", raw: startWith(`"limits":{"Memory_Bytes":1}`), want: ErrInvalidLimits, field: `limits."Memory_Bytes"`},

		// State directory.
		{name: "state dir parent", kind: "start", raw: startWith(`"state_dir":"../x"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir climbs", kind: "start", raw: startWith(`"state_dir":"a/../../etc"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir climbs back in", kind: "start", raw: startWith(`"state_dir":"a/../b"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir absolute", kind: "start", raw: startWith(`"state_dir":"/etc"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir root copy", kind: "start", raw: startWith(`"state_dir":"/srv/galaxy/state/g1"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir NUL", kind: "start", raw: startWith(`"state_dir":"a\u0000b"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir dot dot", kind: "start", raw: startWith(`"state_dir":".."`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir is root", kind: "start", raw: startWith(`"state_dir":"."`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir is root slash", kind: "start", raw: startWith(`"state_dir":"./"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir mount options", kind: "start", raw: startWith(`"state_dir":"a:/etc:rw"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir comma", kind: "start", raw: startWith(`"state_dir":"a,readonly=false"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir hidden", kind: "start", raw: startWith(`"state_dir":".ssh"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir dash", kind: "start", raw: startWith(`"state_dir":"-rf"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir tilde", kind: "start", raw: startWith(`"state_dir":"~root"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir backslash", kind: "start", raw: startWith(`"state_dir":"a\\..\\..\\b"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir newline", kind: "start", raw: startWith(`"state_dir":"a\nb"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir too long", kind: "start", raw: startWith(`"state_dir":"` + strings.Repeat("a/", 600) + `"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir long element", kind: "start", raw: startWith(`"state_dir":"` + strings.Repeat("a", 300) + `"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir of another game", kind: "start", raw: startWith(`"state_dir":"g2"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir inside another game", kind: "start", raw: startWith(`"state_dir":"g2/g1"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir sharing a prefix", kind: "start", raw: startWith(`"state_dir":"g10/x"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir beside the games", kind: "start", raw: startWith(`"state_dir":"games/g1"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir into another game", kind: "start", raw: startWith(`"state_dir":"g1/../g2"`), want: ErrStateDirOutsideRoot, field: "state_dir"},
		{name: "state dir unicode", kind: "start", raw: startWith(`"state_dir":"gäme"`), want: ErrStateDirOutsideRoot, field: "state_dir"},

		// Stop timeouts.
		{name: "negative timeout", kind: "stop", raw: `{"timeout_seconds":-1}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout above max", kind: "stop", raw: `{"timeout_seconds":601}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout overflowing a duration", kind: "restart", raw: `{"timeout_seconds":1000000000000000000}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout overflowing an int", kind: "restart", raw: `{"timeout_seconds":99999999999999999999}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout exponent", kind: "stop", raw: `{"timeout_seconds":1e3}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout fractional", kind: "stop", raw: `{"timeout_seconds":0.5}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout with huge digits", kind: "stop", raw: `{"timeout_seconds":` + strings.Repeat("9", 20000) + `}`, want: ErrInvalidPayload, field: "timeout_seconds"},
		{name: "timeout as string", kind: "restart", raw: `{"timeout_seconds":"30"}`, want: ErrInvalidPayload, field: "timeout_seconds"},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d hostile cases", len(tests))
	}
	p := testPolicy()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gameID := tt.gameID
			switch gameID {
			case "":
				gameID = "g1"
			case "\x00empty":
				gameID = ""
			}
			spec, err := Decode(tt.kind, gameID, []byte(tt.raw), p)
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", spec)
			}
			t.Log(err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %q does not wrap %q", err, tt.want)
			}
			if !IsPermanent(err) {
				t.Errorf("error %q is not permanent", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %q is not a *FieldError", err)
			}
			if !strings.HasPrefix(fe.Field, tt.field) || !strings.HasPrefix(err.Error(), tt.field) {
				t.Errorf("error %q (field %q) does not name field %q", err, fe.Field, tt.field)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestDecodeValid(t *testing.T) {
	p := testPolicy()
	def := p.DefaultLimits
	tests := []struct {
		name, kind, raw string
		want            Spec
	}{
		{name: "minimal start", kind: "start", raw: startWith(""), want: Spec{
			Payload: StartPayload{ImageRef: engine}, ImageRef: engine,
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "full start", kind: "start",
			raw: " \n" + startWith(`"env":{"Z":"last","A_1":"x=y","_u":""},"limits":{"memory_bytes":1073741824,"pids_limit":64},"state_dir":"g1/season-2/"`) + "\n",
			want: Spec{
				Payload: StartPayload{
					ImageRef: engine, Env: map[string]string{"Z": "last", "A_1": "x=y", "_u": ""},
					Limits: Limits{MemoryBytes: 1 << 30, PidsLimit: 64}, StateDir: "g1/season-2/",
				},
				ImageRef: engine, StatePath: testRoot + "/g1/season-2",
				Env:         []string{"A_1=x=y", "Z=last", "_u="},
				Limits:      Limits{MemoryBytes: 1 << 30, NanoCPUs: def.NanoCPUs, PidsLimit: 64},
				StopTimeout: 30 * time.Second,
			}},
		{name: "start at the limits", kind: "start",
			raw: startWith(`"limits":{"memory_bytes":8589934592,"nano_cpus":8000000000,"pids_limit":8192}`),
			want: Spec{
				Payload:  StartPayload{ImageRef: engine, Limits: p.MaxLimits},
				ImageRef: engine, StatePath: testRoot + "/g1", Limits: p.MaxLimits, StopTimeout: 30 * time.Second,
			}},
		{name: "start with nulls", kind: "start", raw: startWith(`"env":null,"limits":null,"state_dir":null`), want: Spec{
			Payload: StartPayload{ImageRef: engine}, ImageRef: engine,
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image by familiar name and digest", kind: "start", raw: `{"image_ref":"galaxy/engine@sha256:` + digestHex + `"}`, want: Spec{
			Payload: StartPayload{ImageRef: "galaxy/engine@sha256:" + digestHex}, ImageRef: "galaxy/engine@sha256:" + digestHex,
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image by normalized name", kind: "start", raw: `{"image_ref":"docker.io/galaxy/engine"}`, want: Spec{
			Payload: StartPayload{ImageRef: "docker.io/galaxy/engine"}, ImageRef: "docker.io/galaxy/engine",
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image in a sub-namespace", kind: "start", raw: `{"image_ref":"registry.example.com/galaxy/x/engine:2"}`, want: Spec{
			Payload: StartPayload{ImageRef: "registry.example.com/galaxy/x/engine:2"}, ImageRef: "registry.example.com/galaxy/x/engine:2",
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image with exact tag", kind: "start", raw: `{"image_ref":"docker.io/library/nginx:1.25"}`, want: Spec{
			Payload: StartPayload{ImageRef: "docker.io/library/nginx:1.25"}, ImageRef: "docker.io/library/nginx:1.25",
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image with exact digest and any tag", kind: "start", raw: `{"image_ref":"busybox:1@sha256:` + digestHex + `"}`, want: Spec{
			Payload: StartPayload{ImageRef: "busybox:1@sha256:" + digestHex}, ImageRef: "busybox:1@sha256:" + digestHex,
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "image any tag", kind: "start", raw: `{"image_ref":"localhost:5000/engine:v7"}`, want: Spec{
			Payload: StartPayload{ImageRef: "localhost:5000/engine:v7"}, ImageRef: "localhost:5000/engine:v7",
			StatePath: testRoot + "/g1", Limits: def, StopTimeout: 30 * time.Second,
		}},
		{name: "pull", kind: "pull", raw: `{"image_ref":"127.0.0.1:5000/galaxy/engine:7"}`, want: Spec{
			Payload: PullPayload{ImageRef: "127.0.0.1:5000/galaxy/engine:7"}, ImageRef: "127.0.0.1:5000/galaxy/engine:7", StopTimeout: 30 * time.Second,
		}},
		{name: "change image", kind: "change_image", raw: `{"image_ref":"galaxy/engine:2","env":{"MODE":"x"},"limits":{"nano_cpus":2000000000}}`, want: Spec{
			Payload: ChangeImagePayload{
				ImageRef: "galaxy/engine:2", Env: map[string]string{"MODE": "x"}, Limits: Limits{NanoCPUs: 2e9},
			},
			ImageRef: "galaxy/engine:2", Env: []string{"MODE=x"},
			Limits:      Limits{MemoryBytes: def.MemoryBytes, NanoCPUs: 2e9, PidsLimit: def.PidsLimit},
			StopTimeout: 30 * time.Second,
		}},
		{name: "stop empty", kind: "stop", raw: ``, want: Spec{Payload: StopPayload{}, StopTimeout: 30 * time.Second}},
		{name: "stop null", kind: "stop", raw: ` null `, want: Spec{Payload: StopPayload{}, StopTimeout: 30 * time.Second}},
		{name: "stop timeout", kind: "stop", raw: `{"timeout_seconds":5}`, want: Spec{Payload: StopPayload{TimeoutSeconds: ptr(5)}, StopTimeout: 5 * time.Second}},
		{name: "stop now", kind: "stop", raw: `{"timeout_seconds":0}`, want: Spec{Payload: StopPayload{TimeoutSeconds: ptr(0)}, StopTimeout: 0}},
		{name: "stop null timeout", kind: "stop", raw: `{"timeout_seconds":null}`, want: Spec{Payload: StopPayload{}, StopTimeout: 30 * time.Second}},
		{name: "restart max", kind: "restart", raw: `{"timeout_seconds":600}`, want: Spec{Payload: RestartPayload{TimeoutSeconds: ptr(600)}, StopTimeout: 10 * time.Minute}},
		{name: "restart default", kind: "restart", raw: `{}`, want: Spec{Payload: RestartPayload{}, StopTimeout: 30 * time.Second}},
		{name: "remove", kind: "remove", raw: `{}`, want: Spec{Payload: RemovePayload{}, StopTimeout: 30 * time.Second}},
		{name: "remove null", kind: "remove", raw: `null`, want: Spec{Payload: RemovePayload{}, StopTimeout: 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.kind, "g1", []byte(tt.raw), p)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			tt.want.Kind, tt.want.GameID = Kind(tt.kind), "g1"
			if !specEqual(got, tt.want) {
				t.Fatalf("Decode:\n got %#v\nwant %#v", got, tt.want)
			}
			if err := got.Validate(p); err != nil {
				t.Fatalf("Validate of a decoded spec: %v", err)
			}
			if got.Payload.Kind() != got.Kind {
				t.Fatalf("payload kind %q for job kind %q", got.Payload.Kind(), got.Kind)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func specEqual(a, b Spec) bool {
	return a.Kind == b.Kind && a.GameID == b.GameID && a.ImageRef == b.ImageRef &&
		a.StatePath == b.StatePath && slices.Equal(a.Env, b.Env) && a.Limits == b.Limits &&
		a.StopTimeout == b.StopTimeout && fmt.Sprintf("%#v", deref(a.Payload)) == fmt.Sprintf("%#v", deref(b.Payload))
}

// deref prints pointer fields by value so payloads compare by content.
func deref(p Payload) any {
	switch p := p.(type) {
	case StopPayload:
		if p.TimeoutSeconds != nil {
			return [2]any{"stop", *p.TimeoutSeconds}
		}
	case RestartPayload:
		if p.TimeoutSeconds != nil {
			return [2]any{"restart", *p.TimeoutSeconds}
		}
	}
	return p
}

func TestDecodeWithUnusablePolicy(t *testing.T) {
	p := testPolicy()
	p.MaxPayloadBytes = 0
	_, err := Decode("stop", "g1", nil, p)
	if !errors.Is(err, ErrInvalidPolicy) || IsPermanent(err) {
		t.Fatalf("error %v: want a non-permanent ErrInvalidPolicy", err)
	}

	// A stop job needs no state root or allow-list ...
	if _, err := Decode("stop", "g1", nil, DefaultPolicy()); err != nil {
		t.Fatalf("stop under the default policy: %v", err)
	}
	// ... a start does.
	p = DefaultPolicy()
	p.AllowedImages = []string{"galaxy/engine"}
	_, err = Decode("start", "g1", []byte(`{"image_ref":"galaxy/engine"}`), p)
	if !errors.Is(err, ErrInvalidPolicy) || IsPermanent(err) {
		t.Fatalf("start without a state root: %v, want a non-permanent ErrInvalidPolicy", err)
	}
	// A bad pattern is the configuration's fault, not the job's.
	p = testPolicy()
	p.AllowedImages = []string{"galaxy/engine*"}
	_, err = Decode("start", "g1", []byte(`{"image_ref":"galaxy/engine"}`), p)
	if !errors.Is(err, ErrInvalidPolicy) || IsPermanent(err) {
		t.Fatalf("start with a bad pattern: %v, want a non-permanent ErrInvalidPolicy", err)
	}
	// An empty allow-list refuses every image.
	p = testPolicy()
	p.AllowedImages = nil
	_, err = Decode("start", "g1", []byte(`{"image_ref":"galaxy/engine"}`), p)
	if !errors.Is(err, ErrImageNotAllowed) {
		t.Fatalf("start with an empty allow-list: %v, want ErrImageNotAllowed", err)
	}
}

func TestSpecValidateRefusesTamperedSpecs(t *testing.T) {
	p := testPolicy()
	good, err := Decode("start", "g1", []byte(startWith(`"env":{"A":"1"}`)), p)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := Decode("stop", "g1", nil, p)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		spec Spec
		want error
	}{
		"unknown kind":        {with(good, func(s *Spec) { s.Kind = "run" }), ErrUnknownKind},
		"bad game id":         {with(good, func(s *Spec) { s.GameID = "../x" }), ErrInvalidGameID},
		"no payload":          {with(good, func(s *Spec) { s.Payload = nil }), ErrInvalidPayload},
		"payload pointer":     {with(good, func(s *Spec) { s.Payload = &StartPayload{} }), ErrInvalidPayload},
		"other payload":       {with(good, func(s *Spec) { s.Payload = StopPayload{} }), ErrInvalidPayload},
		"escaped state path":  {with(good, func(s *Spec) { s.StatePath = testRoot + "/../etc" }), ErrStateDirOutsideRoot},
		"root as state path":  {with(good, func(s *Spec) { s.StatePath = testRoot }), ErrStateDirOutsideRoot},
		"sibling state path":  {with(good, func(s *Spec) { s.StatePath = testRoot + "-evil/g1" }), ErrStateDirOutsideRoot},
		"other game's path":   {with(good, func(s *Spec) { s.StatePath = testRoot + "/g2" }), ErrStateDirOutsideRoot},
		"prefix game's path":  {with(good, func(s *Spec) { s.StatePath = testRoot + "/g10/x" }), ErrStateDirOutsideRoot},
		"image not allowed":   {with(good, func(s *Spec) { s.ImageRef = "evil/engine" }), ErrImageNotAllowed},
		"env injected":        {with(good, func(s *Spec) { s.Env = append(s.Env, "B=1\nC=2") }), ErrInvalidEnv},
		"env unsorted":        {with(good, func(s *Spec) { s.Env = []string{"B=1", "A=1"} }), ErrInvalidEnv},
		"env without =":       {with(good, func(s *Spec) { s.Env = []string{"A"} }), ErrInvalidEnv},
		"zero limits":         {with(good, func(s *Spec) { s.Limits = Limits{} }), ErrInvalidLimits},
		"huge limits":         {with(good, func(s *Spec) { s.Limits.PidsLimit = 1 << 40 }), ErrInvalidLimits},
		"negative timeout":    {with(good, func(s *Spec) { s.StopTimeout = -time.Second }), ErrInvalidPayload},
		"stop with image":     {with(stop, func(s *Spec) { s.ImageRef = engine }), ErrInvalidPayload},
		"stop with limits":    {with(stop, func(s *Spec) { s.Limits = p.DefaultLimits }), ErrInvalidPayload},
		"stop with state":     {with(stop, func(s *Spec) { s.StatePath = testRoot + "/g1" }), ErrInvalidPayload},
		"stop timeout too hi": {with(stop, func(s *Spec) { s.StopTimeout = time.Hour }), ErrInvalidPayload},
	}
	for name, tt := range tests {
		if err := tt.spec.Validate(p); !errors.Is(err, tt.want) {
			t.Errorf("%s: Validate = %v, want %v", name, err, tt.want)
		}
	}
}

func with(s Spec, f func(*Spec)) Spec {
	s.Env = slices.Clone(s.Env)
	f(&s)
	return s
}
