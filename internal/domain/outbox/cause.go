package outbox

import "github.com/galaxy/rtmanager/internal/domain/job"

// JobReason returns the reason of the changes a job of kind k asks for;
// false for a kind that changes no record (pull) or is not known.
func JobReason(k job.Kind) (Reason, bool) {
	switch k {
	case job.KindStart:
		return ReasonJobStart, true
	case job.KindStop:
		return ReasonJobStop, true
	case job.KindRestart:
		return ReasonJobRestart, true
	case job.KindRemove:
		return ReasonJobRemove, true
	case job.KindChangeImage:
		return ReasonJobChangeImage, true
	default:
		return "", false
	}
}

// IsJob reports whether r is the reason of a change a job asked for
// (job_*). Those, and only those, carry the job's id.
func (r Reason) IsJob() bool {
	switch r {
	case ReasonJobStart, ReasonJobStop, ReasonJobRestart, ReasonJobRemove, ReasonJobChangeImage:
		return true
	default:
		return false
	}
}

// Step is a change of a record's current container that an observer (the
// events watcher, a relist, a job's look at its container when it commits)
// finds without having made it.
type Step int

const (
	// StepStart: the container is running (Docker start event).
	StepStart Step = iota + 1
	// StepExit: the container has exited (Docker die event).
	StepExit
	// StepGone: the container no longer exists (Docker destroy event).
	StepGone
)

// Claim says how a job in progress on a game relates to a step of the
// game's container that someone else observed.
type Claim int

const (
	// Unclaimed: the job does not ask for this step; it is reported with
	// the observer's own reason (observed_*, reconcile_*, cleanup).
	Unclaimed Claim = iota
	// Claimed: the step is the change the job asks for; it is reported
	// with the job's reason and id, whoever records it first.
	Claimed
	// Passing: the step is on the way of the job's operation (the die of a
	// restart, the old container's exit during an image change); it is
	// not reported: the job records its change itself.
	Passing
)

var claimNames = [...]string{"unclaimed", "claimed", "passing"}

func (c Claim) String() string {
	if int(c) < len(claimNames) {
		return claimNames[c]
	}
	return "unknown"
}

// ActiveJob is a game's job in progress: claimed at least once and not
// finished (running, or queued again for its next attempt). Observers read
// it from the job table under the game's lock.
type ActiveJob struct {
	ID   int64
	Kind job.Kind
}

// Claim returns how a (nil: no job in progress) relates to step s of the
// record's current container. See the package documentation for the table.
func (a *ActiveJob) Claim(s Step) Claim {
	if a == nil {
		return Unclaimed
	}
	switch a.Kind {
	case job.KindStart:
		switch s {
		case StepStart:
			return Claimed
		case StepGone:
			// A start replaces a stopped container of another image.
			return Passing
		}
	case job.KindStop:
		if s == StepExit {
			return Claimed
		}
	case job.KindRestart:
		switch s {
		case StepStart:
			return Claimed
		case StepExit:
			return Passing
		}
	case job.KindRemove:
		switch s {
		case StepGone:
			return Claimed
		case StepExit:
			// Force removal kills a running container first.
			return Passing
		}
	case job.KindChangeImage:
		// The record names the old container until the job commits the
		// new one: everything that happens to it is on the way.
		switch s {
		case StepStart, StepExit, StepGone:
			return Passing
		}
	}
	return Unclaimed
}

// Attribute returns the details of an observed step s for the game's job in
// progress a, and whether the step is to be reported at all. observed is the
// observer's own reason, used when the job does not claim the step.
func Attribute(a *ActiveJob, s Step, observed Reason) (TransitionDetails, bool) {
	switch a.Claim(s) {
	case Passing:
		return TransitionDetails{}, false
	case Claimed:
		reason, _ := JobReason(a.Kind) // Claim claims nothing for an unknown kind
		return TransitionDetails{Reason: reason, JobID: a.ID, RequestedByJob: true}, true
	default:
		return TransitionDetails{Reason: observed}, true
	}
}
