package job

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

func TestKinds(t *testing.T) {
	want := []Kind{"start", "stop", "restart", "remove", "change_image", "pull"}
	if !slices.Equal(AllKinds(), want) {
		t.Fatalf("AllKinds() = %v", AllKinds())
	}
	for _, k := range AllKinds() {
		if !k.IsKnown() {
			t.Errorf("%q.IsKnown() = false", k)
		}
		if DefaultMaxAttempts(k) < 1 {
			t.Errorf("DefaultMaxAttempts(%q) = %d", k, DefaultMaxAttempts(k))
		}
	}
	for _, k := range []Kind{"", "Start", "changeImage", "kill"} {
		if k.IsKnown() {
			t.Errorf("%q.IsKnown() = true", k)
		}
	}
	if DefaultMaxAttempts(KindStart) != 5 || DefaultMaxAttempts(KindPull) != 5 || DefaultMaxAttempts(KindChangeImage) != 3 || DefaultMaxAttempts("kill") != 1 {
		t.Error("DefaultMaxAttempts differs from the documented values")
	}
}

func TestStatuses(t *testing.T) {
	want := []Status{"queued", "running", "succeeded", "failed", "cancelled"}
	if !slices.Equal(AllStatuses(), want) {
		t.Fatalf("AllStatuses() = %v", AllStatuses())
	}
	final := map[Status]bool{StatusSucceeded: true, StatusFailed: true, StatusCancelled: true}
	for _, s := range AllStatuses() {
		if !s.IsKnown() {
			t.Errorf("%q.IsKnown() = false", s)
		}
		if s.IsFinal() != final[s] {
			t.Errorf("%q.IsFinal() = %v", s, s.IsFinal())
		}
	}
	if Status("done").IsKnown() || Status("done").IsFinal() {
		t.Error("unknown status reported as known or final")
	}
}

func TestIsPermanent(t *testing.T) {
	for _, sentinel := range []error{
		ErrInvalidPayload, ErrUnknownKind, ErrInvalidGameID, ErrImageNotAllowed,
		ErrStateDirOutsideRoot, ErrInvalidLimits, ErrInvalidEnv, runtime.ErrRemoved,
	} {
		if !IsPermanent(fmt.Errorf("context: %w", sentinel)) {
			t.Errorf("IsPermanent(wrapped %v) = false", sentinel)
		}
	}
	plain := errors.New("docker: connection refused")
	if !IsPermanent(fmt.Errorf("executor: %w", Permanent(plain))) {
		t.Error("IsPermanent(wrapped Permanent(err)) = false")
	}
	if got := Permanent(plain); got.Error() != plain.Error() || !errors.Is(got, plain) {
		t.Errorf("Permanent(err) = %v, does not keep err", got)
	}
	if (&PermanentError{}).Error() == "" {
		t.Error("PermanentError without Err has an empty message")
	}
	for _, err := range []error{nil, plain, ErrInvalidPolicy, runtime.ErrStaleContainer, runtime.ErrInvalidTransition} {
		if IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = true", err)
		}
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
}

func TestValidateGameIDAccepts(t *testing.T) {
	for _, id := range []string{"a", "0", "g1", "game-42", "a-b-c", "007", strings.Repeat("z", 51)} {
		if err := ValidateGameID(id); err != nil {
			t.Errorf("ValidateGameID(%q) = %v", id, err)
		}
		if name := runtime.ContainerName(id); len(name) > 63 {
			t.Errorf("container name %q is over 63 characters", name)
		}
	}
}

func TestImagePatterns(t *testing.T) {
	valid := []string{
		"nginx", "nginx:*", "nginx:1.25", "galaxy/*", "docker.io/*", "registry.example.com:5000/*",
		"localhost/*", "registry.example.com/galaxy/engine@sha256:" + digestHex,
	}
	for _, p := range valid {
		if err := ValidateImagePattern(p); err != nil {
			t.Errorf("ValidateImagePattern(%q) = %v", p, err)
		}
	}
	invalid := []string{"", "*", "/*", ":*", "galaxy/engine*", "*/engine", "galaxy/*/engine", "Galaxy Engine", "nginx:1.25/*", "nginx:1:*", "a/**"}
	for _, p := range invalid {
		if err := ValidateImagePattern(p); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("ValidateImagePattern(%q) = %v, want ErrInvalidPolicy", p, err)
		}
	}

	tests := []struct {
		pattern, image string
		allowed        bool
	}{
		{"docker.io/library/nginx", "nginx:1", true},
		{"nginx", "docker.io/library/nginx@sha256:" + digestHex, true},
		{"nginx:*", "nginx:7", true},
		{"nginx:*", "nginx2:7", false},
		{"docker.io/*", "anything/at/all:1", true},
		{"docker.io/*", "nginx", true},
		{"docker.io/*", "quay.io/x/y", false},
		{"galaxy/*", "docker.io/galaxy/engine", true},
		{"galaxy/*", "galaxy", false},
		{"galaxy/*", "galaxyx/engine", false},
		{"library/*", "nginx", true},
		{"localhost/*", "localhost/engine:1", true},
		{"localhost/*", "localhost:5000/engine:1", false},
		{"nginx:latest", "nginx", true},
		{"nginx:latest", "nginx:1", false},
		{"registry.example.com/galaxy/*", "registry.example.com/galaxy", false},
	}
	for _, tt := range tests {
		err := CheckImage(tt.image, []string{tt.pattern})
		if tt.allowed && err != nil {
			t.Errorf("pattern %q refuses %q: %v", tt.pattern, tt.image, err)
		}
		if !tt.allowed && !errors.Is(err, ErrImageNotAllowed) {
			t.Errorf("pattern %q on %q: %v, want ErrImageNotAllowed", tt.pattern, tt.image, err)
		}
	}
}

func TestResolveStatePath(t *testing.T) {
	got, err := ResolveStatePath("/srv/state", "g1", "")
	if err != nil || got != "/srv/state/g1" {
		t.Fatalf("ResolveStatePath default = %q, %v", got, err)
	}
	for dir, want := range map[string]string{
		"g1":            "/srv/state/g1",
		"g1/":           "/srv/state/g1",
		"./g1//b/./c/":  "/srv/state/g1/b/c",
		"g1/season-2":   "/srv/state/g1/season-2",
		"g1/g2":         "/srv/state/g1/g2",
		"g1/.":          "/srv/state/g1",
		"./g1/x.y_z-1/": "/srv/state/g1/x.y_z-1",
	} {
		got, err := ResolveStatePath("/srv/state", "g1", dir)
		if err != nil || got != want {
			t.Errorf("ResolveStatePath(%q) = %q, %v; want %q", dir, got, err, want)
		}
	}
	// Another game's directory, or anything beside the game's own, is
	// refused with an error that says so.
	for _, dir := range []string{"g2", "g2/g1", "g10", "g1x/y", "games/g1", "a/g1", "./g2/", "x"} {
		_, err := ResolveStatePath("/srv/state", "g1", dir)
		if !errors.Is(err, ErrStateDirOutsideRoot) || !strings.Contains(err.Error(), `does not start with the game id "g1"`) {
			t.Errorf("state_dir %q for game g1: %v, want ErrStateDirOutsideRoot naming the game's directory", dir, err)
		}
	}
	for _, root := range []string{"", "srv/state", "/srv/state/", "/srv/../state", "/"} {
		if _, err := ResolveStatePath(root, "g1", ""); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("root %q: %v, want ErrInvalidPolicy", root, err)
		}
	}
	// The default directory is the game id, checked like a state_dir.
	for _, id := range []string{"..", "", "/etc", "a/../.."} {
		_, err := ResolveStatePath("/srv/state", id, "")
		if !errors.Is(err, ErrStateDirOutsideRoot) {
			t.Errorf("game id %q: %v, want ErrStateDirOutsideRoot", id, err)
		}
		if err != nil && !strings.Contains(err.Error(), "game id") {
			t.Errorf("game id %q: error %q does not say the game id was used", id, err)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("DefaultPolicy().Validate() = %v, want ErrInvalidPolicy (no state root)", err)
	}
	if err := testPolicy().Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	tests := map[string]func(*Policy){
		"no payload size":       func(p *Policy) { p.MaxPayloadBytes = 0 },
		"negative env count":    func(p *Policy) { p.MaxEnvVars = -1 },
		"negative env size":     func(p *Policy) { p.MaxEnvValueBytes = -1 },
		"default over max stop": func(p *Policy) { p.DefaultStopTimeout = time.Hour },
		"negative stop":         func(p *Policy) { p.DefaultStopTimeout = -time.Second },
		"default over max mem":  func(p *Policy) { p.DefaultLimits.MemoryBytes = p.MaxLimits.MemoryBytes + 1 },
		"zero default cpus":     func(p *Policy) { p.DefaultLimits.NanoCPUs = 0 },
		"zero max pids":         func(p *Policy) { p.MaxLimits.PidsLimit = 0 },
		"relative root":         func(p *Policy) { p.StateRoot = "state" },
		"bad pattern":           func(p *Policy) { p.AllowedImages = append(p.AllowedImages, "*") },
	}
	for name, mutate := range tests {
		p := testPolicy()
		mutate(&p)
		if err := p.Validate(); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidPolicy", name, err)
		}
	}
}

func TestEnvEntries(t *testing.T) {
	p := testPolicy()
	got, err := p.EnvEntries(map[string]string{"b": "2", "A": "x=1", "_": ""})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=x=1", "_=", "b=2"}; !slices.Equal(got, want) {
		t.Fatalf("EnvEntries = %q, want %q", got, want)
	}
	if got, err := p.EnvEntries(nil); got != nil || err != nil {
		t.Fatalf("EnvEntries(nil) = %q, %v", got, err)
	}
	p.MaxEnvVars = 0
	if _, err := p.EnvEntries(map[string]string{"A": "1"}); !errors.Is(err, ErrInvalidEnv) {
		t.Fatalf("EnvEntries over a zero limit: %v", err)
	}
}
