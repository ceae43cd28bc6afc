package runtime

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func placement() Placement {
	return Placement{
		GameID:         "g1",
		HostID:         "host-a",
		EngineEndpoint: EngineEndpointFor("g1"),
		StatePath:      "/srv/state/g1",
		DockerNetwork:  "galaxy",
	}
}

func TestCreate(t *testing.T) {
	now := t0.Add(time.Minute)
	r, err := Create(placement(), "c1", "engine:1", now)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := RuntimeRecord{
		GameID: "g1", HostID: "host-a", Status: StatusRunning,
		CurrentContainerID: "c1", CurrentImageRef: "engine:1",
		EngineEndpoint: "http://galaxy-game-g1:8080", StatePath: "/srv/state/g1", DockerNetwork: "galaxy",
		StartedAt: &now, LastOpAt: now, CreatedAt: now,
	}
	if !r.Equal(want) {
		t.Fatalf("Create = %+v, want %+v", r, want)
	}
}

func TestCreateRefused(t *testing.T) {
	tests := map[string]struct {
		p         func(*Placement)
		container string
		image     string
		at        time.Time
		msg       string
	}{
		"no container": {container: "", image: "engine:1", at: t0, msg: "container id"},
		"no image":     {container: "c1", image: "", at: t0, msg: "image ref"},
		"zero time":    {container: "c1", image: "engine:1", msg: "last op at"},
		"no game":      {p: func(p *Placement) { p.GameID = "" }, container: "c1", image: "engine:1", at: t0, msg: "game id"},
		"no host":      {p: func(p *Placement) { p.HostID = "" }, container: "c1", image: "engine:1", at: t0, msg: "host id"},
		"no network":   {p: func(p *Placement) { p.DockerNetwork = "" }, container: "c1", image: "engine:1", at: t0, msg: "docker network"},
		"no endpoint":  {p: func(p *Placement) { p.EngineEndpoint = "" }, container: "c1", image: "engine:1", at: t0, msg: "engine endpoint"},
		"no state":     {p: func(p *Placement) { p.StatePath = "" }, container: "c1", image: "engine:1", at: t0, msg: "state path"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := placement()
			if tt.p != nil {
				tt.p(&p)
			}
			_, err := Create(p, tt.container, tt.image, tt.at)
			if !errors.Is(err, ErrInvalidTransition) {
				t.Fatalf("Create error = %v, want ErrInvalidTransition", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Create error = %q, want it to mention %q", err, tt.msg)
			}
		})
	}
}

type transition func(RuntimeRecord) (RuntimeRecord, error)

// TestTransitions covers every allowed and refused step. want checks the
// result of an allowed step; wantErr names the sentinel of a refused one.
func TestTransitions(t *testing.T) {
	later := t0.Add(time.Hour)
	earlier := t0.Add(-time.Hour) // before LastOpAt of every base record: clamped.
	invalid := func() RuntimeRecord { r := validRunning(); r.HostID = ""; return r }
	tests := []struct {
		name    string
		from    func() RuntimeRecord
		op      transition
		wantErr error
		// unchanged: an idempotent replay, the result must Equal from.
		unchanged bool
		want      func(RuntimeRecord) RuntimeRecord
	}{
		// Start.
		{name: "start stopped same container", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:1", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.StartedAt, r.StoppedAt, r.LastOpAt = StatusRunning, &later, nil, later
				return r
			}},
		{name: "start stopped new container and image", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c2", "engine:2", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.CurrentContainerID, r.CurrentImageRef = StatusRunning, "c2", "engine:2"
				r.StartedAt, r.StoppedAt, r.LastOpAt = &later, nil, later
				return r
			}},
		{name: "start stopped clamps time", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:1", earlier) },
			want: func(r RuntimeRecord) RuntimeRecord {
				last := r.LastOpAt
				r.Status, r.StartedAt, r.StoppedAt = StatusRunning, &last, nil
				return r
			}},
		{name: "start running replay", from: validRunning, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:1", later) }},
		{name: "start running other container", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c2", "engine:1", later) }},
		{name: "start running other image", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:2", later) }},
		{name: "start without container", from: validStopped, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("", "engine:1", later) }},
		{name: "start without image", from: validStopped, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "", later) }},
		{name: "start removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:1", later) }},
		{name: "start invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Start("c1", "engine:1", later) }},

		// ObserveStart.
		{name: "observe start stopped", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c1", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.StartedAt, r.StoppedAt, r.LastOpAt = StatusRunning, &later, nil, later
				return r
			}},
		{name: "observe start clamps time", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c1", earlier) },
			want: func(r RuntimeRecord) RuntimeRecord {
				last := r.LastOpAt
				r.Status, r.StartedAt, r.StoppedAt = StatusRunning, &last, nil
				return r
			}},
		{name: "observe start running replay", from: validRunning, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c1", later) }},
		{name: "observe start stale running", from: validRunning, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c0", later) }},
		{name: "observe start stale stopped", from: validStopped, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c0", later) }},
		{name: "observe start without container", from: func() RuntimeRecord { r := validStopped(); r.CurrentContainerID = ""; return r },
			wantErr: ErrInvalidTransition,
			op:      func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("", later) }},
		{name: "observe start removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c1", later) }},
		{name: "observe start removed empty id", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("", later) }},
		{name: "observe start invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ObserveStart("c1", later) }},

		// Restart: dated by the daemon's start of the new run.
		{name: "restart running", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.StartedAt, r.LastOpAt = &later, later
				return r
			}},
		{name: "restart running dated after the run began", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later.Add(time.Second)) },
			want: func(r RuntimeRecord) RuntimeRecord {
				after := later.Add(time.Second)
				r.StartedAt, r.LastOpAt = &after, after
				return r
			}},
		{name: "restart stopped", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.StartedAt, r.StoppedAt, r.LastOpAt = StatusRunning, &later, nil, later
				return r
			}},
		{name: "restart running: the run began at or after it already", from: validRunning, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", t0.Add(time.Second), later) }},
		{name: "restart running: a replayed earlier start", from: validRunning, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", t0, t0) }},
		{name: "restart stopped: the new run has already ended", from: validStopped, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) {
				return r.Restart("c1", t0.Add(1500*time.Millisecond), later)
			}},
		{name: "restart dated before its run", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later.Add(-time.Second)) }},
		{name: "restart without run start", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", time.Time{}, later) }},
		{name: "restart stale", from: validRunning, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c0", later, later) }},
		{name: "restart removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later) }},
		{name: "restart invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Restart("c1", later, later) }},

		// Stop.
		{name: "stop running", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c1", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.StoppedAt, r.LastOpAt = StatusStopped, &later, later
				return r
			}},
		{name: "stop running clamps time", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c1", earlier) },
			want: func(r RuntimeRecord) RuntimeRecord {
				last := r.LastOpAt
				r.Status, r.StoppedAt = StatusStopped, &last
				return r
			}},
		{name: "stop stopped replay", from: validStopped, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c1", later) }},
		{name: "stop stale", from: validRunning, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c0", later) }},
		{name: "stop empty container is stale", from: validRunning, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("", later) }},
		{name: "stop stale on stopped", from: validStopped, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c0", later) }},
		{name: "stop removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c1", later) }},
		{name: "stop invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Stop("c1", later) }},

		// Remove.
		{name: "remove running", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("c1", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.CurrentContainerID, r.RemovedAt, r.LastOpAt = StatusRemoved, "", &later, later
				return r // StoppedAt stays nil: it never stopped.
			}},
		{name: "remove stopped keeps stopped at", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("c1", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.CurrentContainerID, r.RemovedAt, r.LastOpAt = StatusRemoved, "", &later, later
				return r
			}},
		{name: "remove current", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.CurrentContainerID, r.RemovedAt, r.LastOpAt = StatusRemoved, "", &later, later
				return r
			}},
		{name: "remove stopped without container", from: func() RuntimeRecord { r := validStopped(); r.CurrentContainerID = ""; return r },
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.RemovedAt, r.LastOpAt = StatusRemoved, &later, later
				return r
			}},
		{name: "remove clamps time", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("c1", earlier) },
			want: func(r RuntimeRecord) RuntimeRecord {
				last := r.LastOpAt
				r.Status, r.CurrentContainerID, r.RemovedAt = StatusRemoved, "", &last
				return r
			}},
		{name: "remove stale", from: validRunning, wantErr: ErrStaleContainer,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("c0", later) }},
		{name: "remove removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("", later) }},
		{name: "remove removed named", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("c1", later) }},
		{name: "remove invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.Remove("", later) }},

		// ChangeImage.
		{name: "change image running", from: validRunning,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "engine:2", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.CurrentContainerID, r.CurrentImageRef, r.StartedAt, r.LastOpAt = "c2", "engine:2", &later, later
				return r
			}},
		{name: "change image stopped", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "engine:2", later) },
			want: func(r RuntimeRecord) RuntimeRecord {
				r.Status, r.CurrentContainerID, r.CurrentImageRef = StatusRunning, "c2", "engine:2"
				r.StartedAt, r.StoppedAt, r.LastOpAt = &later, nil, later
				return r
			}},
		{name: "change image clamps time", from: validStopped,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "engine:2", earlier) },
			want: func(r RuntimeRecord) RuntimeRecord {
				last := r.LastOpAt
				r.Status, r.CurrentContainerID, r.CurrentImageRef = StatusRunning, "c2", "engine:2"
				r.StartedAt, r.StoppedAt = &last, nil
				return r
			}},
		{name: "change image running replay", from: validRunning, unchanged: true,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c1", "engine:1", later) }},
		{name: "change image without container", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("", "engine:2", later) }},
		{name: "change image without image", from: validRunning, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "", later) }},
		{name: "change image removed", from: validRemoved, wantErr: ErrRemoved,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "engine:2", later) }},
		{name: "change image invalid record", from: invalid, wantErr: ErrInvalidTransition,
			op: func(r RuntimeRecord) (RuntimeRecord, error) { return r.ChangeImage("c2", "engine:2", later) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := tt.from()
			got, err := tt.op(from)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), `"g1"`) {
					t.Errorf("error %q does not name the game", err)
				}
				if !got.Equal(from) {
					t.Errorf("refused step changed the record: %+v", got)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.unchanged:
				if !got.Equal(from) {
					t.Fatalf("replay changed the record:\n got %+v\nfrom %+v", got, from)
				}
			default:
				want := tt.want(tt.from())
				if !got.Equal(want) {
					t.Fatalf("result:\n got %+v\nwant %+v", got, want)
				}
				if err := got.Validate(); err != nil {
					t.Fatalf("result is invalid: %v", err)
				}
				if got.LastOpAt.Before(from.LastOpAt) {
					t.Fatalf("LastOpAt went backwards: %v < %v", got.LastOpAt, from.LastOpAt)
				}
			}
		})
	}
}

// TestTransitionsDoNotAlias checks that a transition never writes through
// the time pointers it shares with the record it started from.
func TestTransitionsDoNotAlias(t *testing.T) {
	from := validStopped()
	stoppedAt := *from.StoppedAt
	startedAt := *from.StartedAt
	if _, err := from.Start("c1", "engine:1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := from.Remove("", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !from.StoppedAt.Equal(stoppedAt) || !from.StartedAt.Equal(startedAt) {
		t.Fatal("transition modified the original record")
	}
}

// TestLifecycle walks a game through its whole life, with a stale event
// from a previous container in the middle.
func TestLifecycle(t *testing.T) {
	r, err := Create(placement(), "c1", "engine:1", t0)
	must := func(next RuntimeRecord, err error) RuntimeRecord {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	if err != nil {
		t.Fatal(err)
	}
	r = must(r.Stop("c1", t0.Add(1*time.Second)))         // observed die
	r = must(r.ObserveStart("c1", t0.Add(2*time.Second))) // restart policy
	r = must(r.ChangeImage("c2", "engine:2", t0.Add(3*time.Second)))
	if _, err := r.Stop("c1", t0.Add(4*time.Second)); !errors.Is(err, ErrStaleContainer) {
		t.Fatalf("die of the old container: %v, want ErrStaleContainer", err)
	}
	if _, err := r.Remove("c1", t0.Add(4*time.Second)); !errors.Is(err, ErrStaleContainer) {
		t.Fatalf("destroy of the old container: %v, want ErrStaleContainer", err)
	}
	r = must(r.Stop("c2", t0.Add(5*time.Second)))
	r = must(r.Start("c2", "engine:2", t0.Add(6*time.Second)))
	r = must(r.Stop("c2", t0.Add(7*time.Second)))
	r = must(r.Remove("c2", t0.Add(8*time.Second)))
	if r.Status != StatusRemoved || r.CurrentContainerID != "" || r.CurrentImageRef != "engine:2" ||
		!r.StoppedAt.Equal(t0.Add(7*time.Second)) || !r.RemovedAt.Equal(t0.Add(8*time.Second)) {
		t.Fatalf("final record: %+v", r)
	}
}

// The digest follows the container: kept while the same container runs
// the same image (stop, observed start, removal for audit), cleared when
// a transition binds another container or image, set by WithImageDigest.
func TestImageDigest(t *testing.T) {
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	r, err := Create(placement(), "c1", "engine:1", t0)
	if err != nil || r.CurrentImageDigest != "" {
		t.Fatalf("Create = %+v, %v", r, err)
	}
	r = r.WithImageDigest(d1)
	if r.CurrentImageDigest != d1 || r.WithImageDigest("").CurrentImageDigest != d1 {
		t.Fatalf("WithImageDigest: %q", r.CurrentImageDigest)
	}
	before := r
	if r.Equal(before.WithImageDigest(d2)) {
		t.Fatal("Equal ignores the digest")
	}
	step := func(next RuntimeRecord, err error) RuntimeRecord {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	r = step(r.Stop("c1", t0.Add(time.Second)))
	r = step(r.ObserveStart("c1", t0.Add(2*time.Second)))
	r = step(r.Start("c1", "engine:1", t0.Add(3*time.Second)))
	if r.CurrentImageDigest != d1 {
		t.Fatalf("same container and image: digest %q, want %q", r.CurrentImageDigest, d1)
	}
	r = step(r.Stop("c1", t0.Add(4*time.Second)))
	if next := step(r.Start("c2", "engine:1", t0.Add(5*time.Second))); next.CurrentImageDigest != "" {
		t.Fatalf("another container: digest %q kept", next.CurrentImageDigest)
	}
	r = step(r.ChangeImage("c3", "engine:2", t0.Add(6*time.Second)))
	if r.CurrentImageDigest != "" {
		t.Fatalf("another image: digest %q kept", r.CurrentImageDigest)
	}
	r = step(r.Remove("", t0.Add(7*time.Second))).WithImageDigest(d2)
	if r.CurrentImageDigest != "" {
		t.Fatalf("a removed record took a digest: %q", r.CurrentImageDigest)
	}
	bad := before
	bad.CurrentImageDigest = "sha256:XYZ"
	if bad.Validate() == nil {
		t.Fatal("Validate accepted a malformed digest")
	}
}
