package job

import (
	"fmt"
	"path/filepath"
	"time"
)

// Limits are the resource limits of an engine container. In a payload a
// zero (or absent) value means "use the policy default"; in a Spec every
// value is set.
type Limits struct {
	// MemoryBytes is the memory limit in bytes (Docker's Memory).
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// NanoCPUs is the CPU quota in billionths of a CPU (Docker's NanoCPUs).
	NanoCPUs int64 `json:"nano_cpus,omitempty"`
	// PidsLimit bounds the number of processes (Docker's PidsLimit).
	PidsLimit int64 `json:"pids_limit,omitempty"`
}

// Policy is the agent's configuration for validating jobs.
type Policy struct {
	// AllowedImages lists the images jobs may run; see CheckImage for
	// the pattern syntax. Empty refuses every image.
	AllowedImages []string
	// StateRoot is the absolute host directory under which every game's
	// state directory lives. It must be set by configuration.
	StateRoot string
	// DefaultLimits replace zero limits in a payload; MaxLimits bound
	// what a payload may ask for.
	DefaultLimits, MaxLimits Limits
	// MaxPayloadBytes bounds the raw JSON payload.
	MaxPayloadBytes int
	// DefaultStopTimeout applies when a payload names none;
	// MaxStopTimeout bounds what a payload may ask for.
	DefaultStopTimeout, MaxStopTimeout time.Duration
	// DefaultReadyTimeout applies when a start, restart or image change
	// names no ready_timeout_seconds; MaxReadyTimeout bounds what a
	// payload may ask for.
	DefaultReadyTimeout, MaxReadyTimeout time.Duration
	// MaxEnvVars bounds the number of environment variables, and
	// MaxEnvValueBytes the size of each value.
	MaxEnvVars       int
	MaxEnvValueBytes int
}

// DefaultPolicy returns the bounds of bounds.go, which the agent uses and
// the contract states. AllowedImages and StateRoot
// are left empty: they depend on the deployment and must be configured.
func DefaultPolicy() Policy {
	return Policy{
		DefaultLimits: Limits{
			MemoryBytes: DefaultMemoryBytes,
			NanoCPUs:    DefaultNanoCPUs,
			PidsLimit:   DefaultPidsLimit,
		},
		MaxLimits: Limits{
			MemoryBytes: MaxMemoryBytes,
			NanoCPUs:    MaxNanoCPUs,
			PidsLimit:   MaxPidsLimit,
		},
		MaxPayloadBytes:     MaxPayloadBytes,
		DefaultStopTimeout:  DefaultStopTimeoutSeconds * time.Second,
		MaxStopTimeout:      MaxStopTimeoutSeconds * time.Second,
		DefaultReadyTimeout: DefaultReadyTimeoutSeconds * time.Second,
		MaxReadyTimeout:     MaxReadyTimeoutSeconds * time.Second,
		MaxEnvVars:          MaxEnvVars,
		MaxEnvValueBytes:    MaxEnvValueBytes,
	}
}

// Validate checks the whole policy, as configuration loading should at
// startup. Decode checks only the parts a job uses, so that, for
// instance, a stop job decodes under a policy without a state root.
// Errors wrap ErrInvalidPolicy.
func (p Policy) Validate() error {
	if err := p.validateBounds(); err != nil {
		return err
	}
	if err := validateStateRoot(p.StateRoot); err != nil {
		return err
	}
	for _, pattern := range p.AllowedImages {
		if err := ValidateImagePattern(pattern); err != nil {
			return err
		}
	}
	return nil
}

// validateBounds checks the size, count, limit and timeout bounds.
func (p Policy) validateBounds() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...)
	}
	if p.MaxPayloadBytes <= 0 {
		return bad("max payload bytes must be positive, got %d", p.MaxPayloadBytes)
	}
	if p.MaxEnvVars < 0 || p.MaxEnvValueBytes < 0 {
		return bad("env bounds must not be negative, got %d variables of %d bytes", p.MaxEnvVars, p.MaxEnvValueBytes)
	}
	if p.MaxStopTimeout < 0 || p.DefaultStopTimeout < 0 || p.DefaultStopTimeout > p.MaxStopTimeout {
		return bad("stop timeouts must satisfy 0 <= default (%s) <= max (%s)", p.DefaultStopTimeout, p.MaxStopTimeout)
	}
	if minReady := MinReadyTimeoutSeconds * time.Second; p.DefaultReadyTimeout < minReady || p.DefaultReadyTimeout > p.MaxReadyTimeout {
		return bad("ready timeouts must satisfy %s <= default (%s) <= max (%s)", minReady, p.DefaultReadyTimeout, p.MaxReadyTimeout)
	}
	for _, l := range limitFields(p.DefaultLimits, p.MaxLimits) {
		if l.max < l.min {
			return bad("max %s must be at least %d, got %d", l.name, l.min, l.max)
		}
		if l.value < l.min || l.value > l.max {
			return bad("default %s must be within %d..%d, got %d", l.name, l.min, l.max, l.value)
		}
	}
	return nil
}

// limitField is one limit with its name in the payload and its bounds.
type limitField struct {
	name     string
	value    int64
	min, max int64
}

// limitFields lists the limits of l with their bounds, in payload order.
// The minima are Docker's: refusing less here makes the job fail with a
// clear error instead of a daemon error after retries.
func limitFields(l, maxLimits Limits) []limitField {
	return []limitField{
		{name: "limits.memory_bytes", value: l.MemoryBytes, min: MinMemoryBytes, max: maxLimits.MemoryBytes},
		{name: "limits.nano_cpus", value: l.NanoCPUs, min: MinNanoCPUs, max: maxLimits.NanoCPUs},
		{name: "limits.pids_limit", value: l.PidsLimit, min: MinPidsLimit, max: maxLimits.PidsLimit},
	}
}

// ResolveLimits applies the policy to requested limits: zero values take
// the default, negative values and values outside the accepted range are
// refused with ErrInvalidLimits.
func (p Policy) ResolveLimits(requested Limits) (Limits, error) {
	out := requested
	fields := limitFields(requested, p.MaxLimits)
	defaults := limitFields(p.DefaultLimits, p.MaxLimits)
	targets := []*int64{&out.MemoryBytes, &out.NanoCPUs, &out.PidsLimit}
	for i, f := range fields {
		switch {
		case f.value == 0:
			*targets[i] = defaults[i].value
		case f.value < 0:
			return Limits{}, fieldErr(f.name, ErrInvalidLimits, fmt.Sprintf(
				"%d is negative; use 0 (or leave it out) for the default %d, or a value within %d..%d",
				f.value, defaults[i].value, f.min, f.max))
		case f.value < f.min || f.value > f.max:
			return Limits{}, fieldErr(f.name, ErrInvalidLimits, fmt.Sprintf(
				"%d is outside the accepted range %d..%d; use 0 (or leave it out) for the default %d",
				f.value, f.min, f.max, defaults[i].value))
		}
	}
	return out, nil
}

// checkResolvedLimits checks limits that must already be resolved: every
// value set and within range.
func (p Policy) checkResolvedLimits(l Limits) error {
	for _, f := range limitFields(l, p.MaxLimits) {
		if f.value < f.min || f.value > f.max {
			return fieldErr(f.name, ErrInvalidLimits, fmt.Sprintf("%d is outside %d..%d", f.value, f.min, f.max))
		}
	}
	return nil
}

// validateStateRoot checks the configured state root: absolute, clean,
// and not the filesystem root (which would put every host path "inside"
// it).
func validateStateRoot(root string) error {
	switch {
	case root == "":
		return fmt.Errorf("%w: state root is not configured", ErrInvalidPolicy)
	case !filepath.IsAbs(root):
		return fmt.Errorf("%w: state root %s must be an absolute path", ErrInvalidPolicy, quote(root))
	case filepath.Clean(root) != root:
		return fmt.Errorf("%w: state root %s must be clean (use %s)", ErrInvalidPolicy, quote(root), quote(filepath.Clean(root)))
	case root == "/":
		return fmt.Errorf("%w: state root must not be the filesystem root", ErrInvalidPolicy)
	}
	return nil
}
