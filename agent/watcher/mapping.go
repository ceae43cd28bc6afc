package watcher

import (
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/reconcile"
	"github.com/galaxy/rtmanager/internal/domain/outbox"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// Verdict is what Map decided for one event.
type Verdict int

const (
	// Apply: next differs from the record; write it with its details.
	Apply Verdict = iota
	// NoChange: the record already says what the event says (a replay, or
	// a job that recorded the step first).
	NoChange
	// Duplicate: the event is not newer than the record's last operation
	// and the container's current state does not back it: a replay of an
	// event whose successors are already applied.
	Duplicate
	// Stale: the event is about a container that is not the record's
	// current one.
	Stale
	// NoRecord: the game has no record (the container is an orphan, or a
	// job has not committed its record yet: the reconciler deals with it).
	NoRecord
	// Removed: the record is removed, which is terminal.
	Removed
	// Foreign: the event does not carry this host's labels, or names a
	// record of another game or host.
	Foreign
	// Unmapped: the action is not one that moves a record.
	Unmapped
	// Invalid: the event lacks what the transition needs, or the status
	// machine refused it.
	Invalid
	// NeedInspect: the event alone is ambiguous; call Map again with
	// Input.Observed set. Map never returns it when Observed is set.
	NeedInspect
	// Deferred: the event is a step on the way of the game's job in
	// progress (the die of a restart, say); the job records its change.
	Deferred
)

var verdictNames = [...]string{"apply", "no_change", "duplicate", "stale", "no_record", "removed", "foreign", "unmapped", "invalid", "need_inspect", "deferred"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Input is one Docker event and what the watcher knows beside it.
type Input struct {
	// HostID is this agent's host.
	HostID string
	Event  engine.Event
	// OOM reports that an oom event of this container came since its last
	// start (it precedes the die).
	OOM bool
	// Job is the game's job in progress (nil when none), read under the
	// game's lock: it decides whether the job asked for what the event
	// reports (outbox.Attribute).
	Job *outbox.ActiveJob
	// Cleanup reports that this agent's sweeper is removing the container:
	// its destroy is reported as cleanup, whoever commits first.
	Cleanup bool
	// Observed is the container as inspected after the event, when Map
	// asked for it (NeedInspect).
	Observed *reconcile.Observed
}

// GameID returns the game the event is about, from its labels.
func (in Input) GameID() string { return in.Event.GameID() }

// Map decides what one event does to the game's record cur (nil when the
// game has no record). It is pure, so it can be fuzzed. Unless the verdict
// is Apply, next is *cur unchanged (the zero record when cur is nil); with
// Apply, next is a valid record of the same game, different from *cur, and
// details carry a known reason.
//
// Rules: start → running (restart-policy restarts included), die → stopped
// with the exit code and OOM only when Docker reported it (an oom event
// before the die, or the OOMKilled flag when the container had to be
// inspected — never from exit code 137), destroy → removed. Events of a
// container that is not the record's current one change nothing.
//
// The reason is the cause (see package outbox): a step the game's job in
// progress asks for carries the job's reason and id, and a start claimed
// by a restart job is the restart (running → running with a new start
// time); a step on the way of the job's operation is Deferred to the job;
// any other step is observed_* (cleanup for the sweeper's removal).
//
// An event that would change the record but is not newer than the
// record's last operation is ambiguous (a replay after later events were
// applied, or an event a job's commit overtook): it is applied only if
// the container, inspected now, is still in the state the event says, and
// it then reports that state (exit code and OOM included), not the old
// event's.
func Map(cur *runtime.RuntimeRecord, in Input) (runtime.RuntimeRecord, outbox.TransitionDetails, Verdict) {
	var unchanged runtime.RuntimeRecord
	if cur != nil {
		unchanged = *cur
	}
	ev := in.Event
	var step outbox.Step
	switch ev.Action {
	case "start":
		step = outbox.StepStart
	case "die":
		step = outbox.StepExit
	case "destroy":
		step = outbox.StepGone
	default:
		return unchanged, outbox.TransitionDetails{}, Unmapped
	}
	if ev.Attributes[engine.LabelManaged] != "true" || in.HostID == "" || ev.Attributes[engine.LabelHost] != in.HostID {
		return unchanged, outbox.TransitionDetails{}, Foreign
	}
	gameID := ev.GameID()
	if gameID == "" || ev.ID == "" || ev.TimeNano <= 0 {
		return unchanged, outbox.TransitionDetails{}, Invalid
	}
	if cur == nil {
		return unchanged, outbox.TransitionDetails{}, NoRecord
	}
	if cur.GameID != gameID || cur.HostID != in.HostID {
		return unchanged, outbox.TransitionDetails{}, Foreign
	}
	if cur.Status.IsTerminal() {
		return unchanged, outbox.TransitionDetails{}, Removed
	}
	if cur.CurrentContainerID != ev.ID {
		return unchanged, outbox.TransitionDetails{}, Stale
	}
	if cur.Validate() != nil {
		return unchanged, outbox.TransitionDetails{}, Invalid
	}

	at := time.Unix(0, ev.TimeNano).UTC().Truncate(time.Microsecond)
	var (
		next   runtime.RuntimeRecord
		d      outbox.TransitionDetails
		report bool
		err    error
	)
	switch ev.Action {
	case "start":
		d, report = outbox.Attribute(in.Job, step, outbox.ReasonObservedStart)
		if d.Reason == outbox.ReasonJobRestart {
			next, err = cur.Restart(ev.ID, at, at)
		} else {
			next, err = cur.ObserveStart(ev.ID, at)
		}
	case "die":
		next, err = cur.Stop(ev.ID, at)
		d, report = outbox.Attribute(in.Job, step, outbox.ReasonObservedDie)
		d.OOM = in.OOM
		if code, ok := ev.ExitCode(); ok {
			d.ExitCode = &code
		}
	case "destroy":
		next, err = cur.Remove(ev.ID, at)
		if in.Cleanup {
			// The sweeper's removal: reported as what it is, whichever of
			// the sweeper and this event commits first.
			d, report = outbox.TransitionDetails{Reason: outbox.ReasonCleanup}, true
		} else {
			d, report = outbox.Attribute(in.Job, step, outbox.ReasonObservedDestroy)
		}
	}
	if err != nil {
		return unchanged, outbox.TransitionDetails{}, Invalid
	}
	if next.Equal(*cur) {
		return unchanged, outbox.TransitionDetails{}, NoChange
	}
	if !report {
		return unchanged, outbox.TransitionDetails{}, Deferred
	}

	newer := at.After(cur.LastOpAt)
	// The daemon sets a container's OOMKilled flag when, and only when, it
	// publishes its oom event, so a die with an exit code needs no inspect:
	// the oom event (if any) came before it on the stream.
	needsObservation := !newer || (ev.Action == "die" && d.ExitCode == nil)
	if needsObservation && in.Observed == nil {
		return unchanged, outbox.TransitionDetails{}, NeedInspect
	}
	if o := in.Observed; o != nil {
		exited := o.Found && (o.State == "exited" || o.State == "dead")
		if !newer {
			backed := false
			switch ev.Action {
			case "start":
				backed = o.Found && (o.State == "running" || o.State == "paused")
			case "die":
				backed = exited
			case "destroy":
				backed = !o.Found
			}
			if !backed {
				return unchanged, outbox.TransitionDetails{}, Duplicate
			}
			if ev.Action == "die" {
				// An old die backed by an exit: the exit is the container's
				// latest, which may not be the event's.
				d.ExitCode, d.OOM = nil, false
			}
		}
		if ev.Action == "die" && exited {
			// The container has not run again since: its state is this exit's.
			d.OOM = d.OOM || o.OOMKilled
			if d.ExitCode == nil {
				code := o.ExitCode
				d.ExitCode = &code
			}
		}
	}
	if next.Validate() != nil || next.GameID != cur.GameID {
		return unchanged, outbox.TransitionDetails{}, Invalid
	}
	return next, d, Apply
}
