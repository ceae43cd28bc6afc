package job

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Payload is the decoded JSON payload of a job; the concrete type follows
// the job's kind. Decode stores values (StartPayload, not *StartPayload).
type Payload interface {
	Kind() Kind
}

// StartPayload is the payload of a start job.
type StartPayload struct {
	// ImageRef is the engine image to run; required.
	ImageRef string `json:"image_ref"`
	// Env is the engine's environment. Names starting with RTM_ are
	// reserved for the agent.
	Env map[string]string `json:"env,omitempty"`
	// Limits are the container's resource limits; zeros take defaults.
	Limits Limits `json:"limits,omitempty"`
	// StateDir is the state directory relative to the policy's state
	// root: empty (the game id), the game id, or a path below it.
	StateDir string `json:"state_dir,omitempty"`
	// Healthcheck replaces the image's HEALTHCHECK; absent keeps it.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for a healthy engine when it
	// has a health check; absent means the policy default.
	ReadyTimeoutSeconds *int `json:"ready_timeout_seconds,omitempty"`
}

// StopPayload is the payload of a stop job.
type StopPayload struct {
	// TimeoutSeconds is how long the engine may take to exit after
	// SIGTERM before it is killed; absent means the policy default.
	TimeoutSeconds *int `json:"timeout_seconds,omitempty"`
}

// RestartPayload is the payload of a restart job.
type RestartPayload struct {
	// TimeoutSeconds is the stop timeout of the restart; absent means the
	// policy default.
	TimeoutSeconds *int `json:"timeout_seconds,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for a healthy engine when its
	// container has a health check; absent means the policy default.
	ReadyTimeoutSeconds *int `json:"ready_timeout_seconds,omitempty"`
}

// RemovePayload is the payload of a remove job; it has no fields.
type RemovePayload struct{}

// ChangeImagePayload is the payload of an image change. The new container
// keeps the game's state directory.
type ChangeImagePayload struct {
	// ImageRef is the new engine image; required.
	ImageRef string `json:"image_ref"`
	// Env is the new container's environment, as for a start.
	Env map[string]string `json:"env,omitempty"`
	// Limits are the new container's limits; zeros take defaults.
	Limits Limits `json:"limits,omitempty"`
	// Healthcheck replaces the new image's HEALTHCHECK; absent keeps it.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for the new engine to be
	// healthy when it has a health check; absent means the policy
	// default. The old container comes back when it is not.
	ReadyTimeoutSeconds *int `json:"ready_timeout_seconds,omitempty"`
}

// PullPayload is the payload of a pull job.
type PullPayload struct {
	// ImageRef is the image to make present; required, and on the
	// allow-list like a start's.
	ImageRef string `json:"image_ref"`
}

// Kind implements Payload.
func (PullPayload) Kind() Kind { return KindPull }

// Kind implements Payload.
func (StartPayload) Kind() Kind { return KindStart }

// Kind implements Payload.
func (StopPayload) Kind() Kind { return KindStop }

// Kind implements Payload.
func (RestartPayload) Kind() Kind { return KindRestart }

// Kind implements Payload.
func (RemovePayload) Kind() Kind { return KindRemove }

// Kind implements Payload.
func (ChangeImagePayload) Kind() Kind { return KindChangeImage }

// Spec is a validated job, ready for an executor.
type Spec struct {
	Kind   Kind
	GameID string
	// Payload is the decoded payload, of the type matching Kind.
	Payload Payload
	// ImageRef is the image to run (or pull), as written in the payload
	// (start, change_image and pull only).
	ImageRef string
	// StatePath is the absolute, clean host path of the state directory:
	// the game's own directory under the state root or a directory inside
	// it (start only).
	StatePath string
	// Env is the environment as sorted "NAME=value" entries (start and
	// change_image only).
	Env []string
	// Limits are the resource limits with defaults applied (start and
	// change_image only; zero otherwise).
	Limits Limits
	// StopTimeout is how long a stop may wait before killing: from the
	// payload for stop and restart, the policy default otherwise (a
	// remove or an image change stops the container too).
	StopTimeout time.Duration
	// Healthcheck is the payload's health check (start and change_image),
	// nil when it gives none: the image's HEALTHCHECK, if any, applies.
	Healthcheck *HealthSpec
	// ReadyTimeout bounds the wait for a healthy engine of a start,
	// restart or image change whose container has a health check: from
	// the payload, the policy default otherwise; zero for other kinds.
	ReadyTimeout time.Duration
}

// Decode validates an untrusted job and returns its Spec. It checks, in
// order, the kind, the game id, the payload size, the payload's JSON
// shape (one object; no unknown, misspelled or duplicate keys; no
// trailing data; an empty or null payload reads as {}) and every field.
//
// Errors are *FieldError values wrapping ErrUnknownKind,
// ErrInvalidGameID, ErrInvalidPayload, ErrImageNotAllowed,
// ErrInvalidEnv, ErrInvalidLimits or ErrStateDirOutsideRoot, all of them
// permanent; or they wrap ErrInvalidPolicy when p cannot be applied.
func Decode(kind string, gameID string, raw []byte, p Policy) (Spec, error) {
	k := Kind(kind)
	if !k.IsKnown() {
		return Spec{}, fieldErr("kind", ErrUnknownKind, fmt.Sprintf("%s is not a job kind; use one of %s", quote(kind), kindList()))
	}
	if err := ValidateGameID(gameID); err != nil {
		return Spec{}, err
	}
	if err := p.validateBounds(); err != nil {
		return Spec{}, err
	}
	if len(raw) > p.MaxPayloadBytes {
		return Spec{}, fieldErr("payload", ErrInvalidPayload, fmt.Sprintf("is %d bytes, over the limit of %d", len(raw), p.MaxPayloadBytes))
	}

	spec := Spec{Kind: k, GameID: gameID, StopTimeout: p.DefaultStopTimeout}
	var err error
	switch k {
	case KindStart:
		var pl StartPayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload, spec.ImageRef = pl, pl.ImageRef
		if spec.Env, spec.Limits, err = p.checkContainer(pl.ImageRef, pl.Env, pl.Limits); err != nil {
			return Spec{}, err
		}
		if spec.StatePath, err = ResolveStatePath(p.StateRoot, gameID, pl.StateDir); err != nil {
			return Spec{}, err
		}
		if spec.Healthcheck, spec.ReadyTimeout, err = p.readiness(pl.Healthcheck, pl.ReadyTimeoutSeconds); err != nil {
			return Spec{}, err
		}
	case KindChangeImage:
		var pl ChangeImagePayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload, spec.ImageRef = pl, pl.ImageRef
		if spec.Env, spec.Limits, err = p.checkContainer(pl.ImageRef, pl.Env, pl.Limits); err != nil {
			return Spec{}, err
		}
		if spec.Healthcheck, spec.ReadyTimeout, err = p.readiness(pl.Healthcheck, pl.ReadyTimeoutSeconds); err != nil {
			return Spec{}, err
		}
	case KindStop:
		var pl StopPayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload = pl
		if spec.StopTimeout, err = p.stopTimeout(pl.TimeoutSeconds); err != nil {
			return Spec{}, err
		}
	case KindRestart:
		var pl RestartPayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload = pl
		if spec.StopTimeout, err = p.stopTimeout(pl.TimeoutSeconds); err != nil {
			return Spec{}, err
		}
		if spec.ReadyTimeout, err = p.readyTimeout(pl.ReadyTimeoutSeconds); err != nil {
			return Spec{}, err
		}
	case KindRemove:
		var pl RemovePayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload = pl
	case KindPull:
		var pl PullPayload
		if err = decodeStrict(raw, &pl); err != nil {
			return Spec{}, err
		}
		spec.Payload, spec.ImageRef = pl, pl.ImageRef
		if err := CheckImage(pl.ImageRef, p.AllowedImages); err != nil {
			return Spec{}, err
		}
	}
	return spec, nil
}

// Validate checks that s is what Decode returns for a valid job under p:
// a guard for Specs built or changed by hand. Errors wrap the same
// sentinels as Decode's.
func (s Spec) Validate(p Policy) error {
	if !s.Kind.IsKnown() {
		return fieldErr("kind", ErrUnknownKind, fmt.Sprintf("%s is not a job kind; use one of %s", quote(string(s.Kind)), kindList()))
	}
	if err := ValidateGameID(s.GameID); err != nil {
		return err
	}
	if err := p.validateBounds(); err != nil {
		return err
	}
	if s.Payload == nil || reflect.ValueOf(s.Payload).Kind() == reflect.Pointer || s.Payload.Kind() != s.Kind {
		return fieldErr("payload", ErrInvalidPayload, fmt.Sprintf("holds %T, not the %s payload value", s.Payload, s.Kind))
	}
	if s.StopTimeout < 0 || s.StopTimeout > p.MaxStopTimeout {
		return fieldErr("timeout_seconds", ErrInvalidPayload, fmt.Sprintf("%s is outside 0s..%s", s.StopTimeout, p.MaxStopTimeout))
	}
	switch s.Kind {
	case KindStart, KindChangeImage, KindRestart:
		if s.ReadyTimeout < MinReadyTimeoutSeconds*time.Second || s.ReadyTimeout > p.MaxReadyTimeout {
			return fieldErr("ready_timeout_seconds", ErrInvalidPayload, fmt.Sprintf("%s is outside %ds..%s", s.ReadyTimeout, MinReadyTimeoutSeconds, p.MaxReadyTimeout))
		}
	default:
		if s.ReadyTimeout != 0 {
			return fieldErr("ready_timeout_seconds", ErrInvalidPayload, fmt.Sprintf("a %s job takes no ready timeout", s.Kind))
		}
	}
	if s.Kind == KindStart || s.Kind == KindChangeImage {
		if err := s.Healthcheck.check(); err != nil {
			return err
		}
	} else if s.Healthcheck != nil {
		return fieldErr("healthcheck", ErrInvalidPayload, fmt.Sprintf("a %s job takes no health check", s.Kind))
	}
	switch s.Kind {
	case KindStart, KindChangeImage:
		if err := CheckImage(s.ImageRef, p.AllowedImages); err != nil {
			return err
		}
		if err := p.checkEnvEntries(s.Env); err != nil {
			return err
		}
		if err := p.checkResolvedLimits(s.Limits); err != nil {
			return err
		}
	case KindPull:
		if err := CheckImage(s.ImageRef, p.AllowedImages); err != nil {
			return err
		}
		if len(s.Env) != 0 || s.Limits != (Limits{}) {
			return fieldErr("payload", ErrInvalidPayload, "a pull job takes no env or limits")
		}
	default:
		if s.ImageRef != "" || len(s.Env) != 0 || s.Limits != (Limits{}) {
			return fieldErr("payload", ErrInvalidPayload, fmt.Sprintf("a %s job takes no image, env or limits", s.Kind))
		}
	}
	if s.Kind == KindStart {
		if err := validateStateRoot(p.StateRoot); err != nil {
			return err
		}
		if !InsideGameDir(p.StateRoot, s.GameID, s.StatePath) {
			return fieldErr("state_dir", ErrStateDirOutsideRoot, fmt.Sprintf("state path %s is not a clean path in the game's own directory %s",
				quote(s.StatePath), quote(GameDir(p.StateRoot, s.GameID))))
		}
	} else if s.StatePath != "" {
		return fieldErr("state_dir", ErrInvalidPayload, fmt.Sprintf("a %s job takes no state path", s.Kind))
	}
	return nil
}

// checkContainer validates what a start and an image change share.
func (p Policy) checkContainer(imageRef string, env map[string]string, limits Limits) ([]string, Limits, error) {
	if err := CheckImage(imageRef, p.AllowedImages); err != nil {
		return nil, Limits{}, err
	}
	entries, err := p.EnvEntries(env)
	if err != nil {
		return nil, Limits{}, err
	}
	resolved, err := p.ResolveLimits(limits)
	if err != nil {
		return nil, Limits{}, err
	}
	return entries, resolved, nil
}

// readiness resolves what a start and an image change share: the health
// check and the ready timeout.
func (p Policy) readiness(h *Healthcheck, readySeconds *int) (*HealthSpec, time.Duration, error) {
	spec, err := ResolveHealthcheck(h)
	if err != nil {
		return nil, 0, err
	}
	ready, err := p.readyTimeout(readySeconds)
	if err != nil {
		return nil, 0, err
	}
	return spec, ready, nil
}

// stopTimeout resolves a payload's timeout_seconds: absent takes the
// default, otherwise 0..MaxStopTimeout in whole seconds.
func (p Policy) stopTimeout(seconds *int) (time.Duration, error) {
	if seconds == nil {
		return p.DefaultStopTimeout, nil
	}
	maxSeconds := int64(p.MaxStopTimeout / time.Second)
	// Compared before multiplying: a huge value would overflow Duration.
	if s := int64(*seconds); s < 0 || s > maxSeconds {
		return 0, fieldErr("timeout_seconds", ErrInvalidPayload, fmt.Sprintf(
			"%d is outside 0..%d; leave it out for the default of %d", s, maxSeconds, int64(p.DefaultStopTimeout/time.Second)))
	}
	return time.Duration(*seconds) * time.Second, nil
}

func kindList() string {
	kinds := AllKinds()
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}
