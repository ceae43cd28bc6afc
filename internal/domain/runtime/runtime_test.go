package runtime

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

func validRunning() RuntimeRecord {
	return RuntimeRecord{
		GameID:             "g1",
		HostID:             "host-a",
		Status:             StatusRunning,
		CurrentContainerID: "c1",
		CurrentImageRef:    "engine:1",
		EngineEndpoint:     EngineEndpointFor("g1"),
		StatePath:          "/srv/state/g1",
		DockerNetwork:      "galaxy",
		StartedAt:          at(time.Second),
		LastOpAt:           t0.Add(time.Second),
		CreatedAt:          t0,
	}
}

func validStopped() RuntimeRecord {
	r := validRunning()
	r.Status = StatusStopped
	r.StoppedAt = at(2 * time.Second)
	r.LastOpAt = t0.Add(2 * time.Second)
	return r
}

func validRemoved() RuntimeRecord {
	r := validStopped()
	r.Status = StatusRemoved
	r.CurrentContainerID = ""
	r.RemovedAt = at(3 * time.Second)
	r.LastOpAt = t0.Add(3 * time.Second)
	return r
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		record  func() RuntimeRecord
		wantErr string
	}{
		{"valid running", validRunning, ""},
		{"valid stopped", validStopped, ""},
		{"valid removed", validRemoved, ""},
		{"valid removed while running", func() RuntimeRecord {
			r := validRunning()
			r.Status, r.CurrentContainerID, r.RemovedAt = StatusRemoved, "", at(5*time.Second)
			return r
		}, ""},
		{"valid stopped without container", func() RuntimeRecord {
			r := validStopped()
			r.CurrentContainerID = ""
			return r
		}, ""},
		{"empty game id", func() RuntimeRecord { r := validRunning(); r.GameID = " \t"; return r }, "game id must not be empty"},
		{"empty host id", func() RuntimeRecord { r := validRunning(); r.HostID = " "; return r }, "host id must not be empty"},
		{"unknown status", func() RuntimeRecord { r := validRunning(); r.Status = "paused"; return r }, `status "paused" is unsupported`},
		{"empty status", func() RuntimeRecord { r := validRunning(); r.Status = ""; return r }, `status "" is unsupported`},
		{"empty engine endpoint", func() RuntimeRecord { r := validRunning(); r.EngineEndpoint = ""; return r }, "engine endpoint must not be empty"},
		{"empty state path", func() RuntimeRecord { r := validRunning(); r.StatePath = ""; return r }, "state path must not be empty"},
		{"empty docker network", func() RuntimeRecord { r := validRunning(); r.DockerNetwork = ""; return r }, "docker network must not be empty"},
		{"zero last op at", func() RuntimeRecord { r := validRunning(); r.LastOpAt = time.Time{}; return r }, "last op at must not be zero"},
		{"zero created at", func() RuntimeRecord { r := validRunning(); r.CreatedAt = time.Time{}; return r }, "created at must not be zero"},
		{"last op before created", func() RuntimeRecord { r := validRunning(); r.LastOpAt = t0.Add(-time.Nanosecond); return r }, "last op at must not be before created at"},
		{"running without container", func() RuntimeRecord { r := validRunning(); r.CurrentContainerID = " "; return r }, "current container id must not be empty for running records"},
		{"running without image", func() RuntimeRecord { r := validRunning(); r.CurrentImageRef = ""; return r }, "current image ref must not be empty for running records"},
		{"running without started at", func() RuntimeRecord { r := validRunning(); r.StartedAt = nil; return r }, "started at must not be nil for running records"},
		{"running with zero started at", func() RuntimeRecord { r := validRunning(); r.StartedAt = &time.Time{}; return r }, "started at must not be zero when present"},
		{"stopped without image", func() RuntimeRecord { r := validStopped(); r.CurrentImageRef = ""; return r }, "current image ref must not be empty for stopped records"},
		{"stopped without stopped at", func() RuntimeRecord { r := validStopped(); r.StoppedAt = nil; return r }, "stopped at must not be nil for stopped records"},
		{"stopped with zero stopped at", func() RuntimeRecord { r := validStopped(); r.StoppedAt = &time.Time{}; return r }, "stopped at must not be zero when present"},
		{"removed without removed at", func() RuntimeRecord { r := validRemoved(); r.RemovedAt = nil; return r }, "removed at must not be nil for removed records"},
		{"removed with zero removed at", func() RuntimeRecord { r := validRemoved(); r.RemovedAt = &time.Time{}; return r }, "removed at must not be zero when present"},
		{"started before created", func() RuntimeRecord { r := validRunning(); r.StartedAt = at(-time.Second); return r }, "started at must not be before created at"},
		{"stopped before started", func() RuntimeRecord { r := validStopped(); r.StoppedAt = at(500 * time.Millisecond); return r }, "stopped at must not be before started at"},
		{"removed before created", func() RuntimeRecord { r := validRemoved(); r.RemovedAt = at(-time.Second); return r }, "removed at must not be before created at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.record().Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	for _, s := range AllStatuses() {
		if !s.IsKnown() {
			t.Errorf("%q.IsKnown() = false", s)
		}
		if got, want := s.IsTerminal(), s == StatusRemoved; got != want {
			t.Errorf("%q.IsTerminal() = %v, want %v", s, got, want)
		}
	}
	if !slices.Equal(AllStatuses(), []Status{"running", "stopped", "removed"}) {
		t.Errorf("AllStatuses() = %v", AllStatuses())
	}
	if Status("RUNNING").IsKnown() || Status("").IsKnown() {
		t.Error("unknown statuses reported as known")
	}
}

func TestNames(t *testing.T) {
	if got := ContainerName("g-7"); got != "galaxy-game-g-7" {
		t.Errorf("ContainerName = %q", got)
	}
	if got := EngineEndpointFor("g-7"); got != "http://galaxy-game-g-7:8080" {
		t.Errorf("EngineEndpointFor = %q", got)
	}
}

func TestEqual(t *testing.T) {
	a := validStopped()
	b := validStopped()
	// The same instants in another location are equal.
	loc := time.FixedZone("X", 3600)
	b.LastOpAt = b.LastOpAt.In(loc)
	sa := b.StartedAt.In(loc)
	b.StartedAt = &sa
	if !a.Equal(b) {
		t.Fatal("records with the same instants are not Equal")
	}
	mutations := map[string]func(*RuntimeRecord){
		"game id":      func(r *RuntimeRecord) { r.GameID = "x" },
		"host id":      func(r *RuntimeRecord) { r.HostID = "x" },
		"status":       func(r *RuntimeRecord) { r.Status = StatusRunning },
		"container":    func(r *RuntimeRecord) { r.CurrentContainerID = "x" },
		"image":        func(r *RuntimeRecord) { r.CurrentImageRef = "x" },
		"endpoint":     func(r *RuntimeRecord) { r.EngineEndpoint = "x" },
		"state path":   func(r *RuntimeRecord) { r.StatePath = "x" },
		"network":      func(r *RuntimeRecord) { r.DockerNetwork = "x" },
		"started nil":  func(r *RuntimeRecord) { r.StartedAt = nil },
		"started":      func(r *RuntimeRecord) { r.StartedAt = at(time.Hour) },
		"stopped nil":  func(r *RuntimeRecord) { r.StoppedAt = nil },
		"stopped":      func(r *RuntimeRecord) { r.StoppedAt = at(time.Hour) },
		"removed set":  func(r *RuntimeRecord) { r.RemovedAt = at(time.Hour) },
		"last op at":   func(r *RuntimeRecord) { r.LastOpAt = t0.Add(time.Hour) },
		"created at":   func(r *RuntimeRecord) { r.CreatedAt = t0.Add(-time.Hour) },
		"removed both": func(r *RuntimeRecord) { r.RemovedAt = at(0) },
	}
	for name, mutate := range mutations {
		c := validStopped()
		mutate(&c)
		if a.Equal(c) || c.Equal(a) {
			t.Errorf("records differing in %s are Equal", name)
		}
	}
}
