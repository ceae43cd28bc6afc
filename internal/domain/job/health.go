package job

import (
	"fmt"
	"strings"
	"time"
)

// Healthcheck is a payload's health check for the engine container
// (start and change_image); it replaces the image's HEALTHCHECK. Durations
// are whole milliseconds, like the other payload numbers an integer with
// its unit in the name.
type Healthcheck struct {
	// Command is the probe's argv, run in the container without a shell
	// (Docker's ["CMD", ...] form): exit 0 means healthy. Required. A
	// shell form is the caller's to spell out (["/bin/sh", "-c", "..."])
	// when the image has a shell; Docker's "CMD", "CMD-SHELL" and "NONE"
	// markers are refused as the first element, so no text changes meaning
	// on its way to the daemon.
	Command []string `json:"command"`
	// IntervalMillis is the time between probes; 0 or absent: the
	// image's, else Docker's default (30 s).
	IntervalMillis int64 `json:"interval_ms,omitempty"`
	// TimeoutMillis bounds one probe; 0 or absent: the image's, else
	// Docker's default (30 s).
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
	// StartPeriodMillis is the warm-up during which failed probes do not
	// count; 0 or absent: the image's, else none.
	StartPeriodMillis int64 `json:"start_period_ms,omitempty"`
	// Retries is how many failed probes in a row make the engine
	// unhealthy; 0 or absent: the image's, else Docker's default (3).
	Retries int `json:"retries,omitempty"`
}

// HealthSpec is a validated Healthcheck; zero durations and retries keep
// the image's value (or Docker's default).
type HealthSpec struct {
	Command     []string
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// ResolveHealthcheck validates a payload's health check; nil gives nil
// (the image's HEALTHCHECK, if any, applies). Errors are *FieldError
// values wrapping ErrInvalidPayload.
func ResolveHealthcheck(h *Healthcheck) (*HealthSpec, error) {
	if h == nil {
		return nil, nil
	}
	if err := checkHealthCommand(h.Command); err != nil {
		return nil, err
	}
	out := &HealthSpec{Command: append([]string(nil), h.Command...), Retries: h.Retries}
	for _, d := range []struct {
		name   string
		millis int64
		max    int64
		to     *time.Duration
	}{
		{"healthcheck.interval_ms", h.IntervalMillis, MaxHealthcheckMillis, &out.Interval},
		{"healthcheck.timeout_ms", h.TimeoutMillis, MaxHealthcheckMillis, &out.Timeout},
		{"healthcheck.start_period_ms", h.StartPeriodMillis, MaxHealthcheckStartPeriodMillis, &out.StartPeriod},
	} {
		if d.millis != 0 && (d.millis < MinHealthcheckMillis || d.millis > d.max) {
			return nil, fieldErr(d.name, ErrInvalidPayload, fmt.Sprintf(
				"%d is outside %d..%d; use 0 (or leave it out) for the image's value", d.millis, MinHealthcheckMillis, d.max))
		}
		*d.to = time.Duration(d.millis) * time.Millisecond
	}
	if h.Retries < 0 || h.Retries > MaxHealthcheckRetries {
		return nil, fieldErr("healthcheck.retries", ErrInvalidPayload, fmt.Sprintf(
			"%d is outside 1..%d; use 0 (or leave it out) for the image's value", h.Retries, MaxHealthcheckRetries))
	}
	return out, nil
}

// checkHealthCommand validates a probe's argv.
func checkHealthCommand(cmd []string) error {
	const field = "healthcheck.command"
	switch {
	case len(cmd) == 0:
		return fieldErr(field, ErrInvalidPayload, `is required: the probe's argv, such as ["/engine", "healthcheck"]`)
	case len(cmd) > MaxHealthcheckArgs:
		return fieldErr(field, ErrInvalidPayload, fmt.Sprintf("has %d arguments, over the limit of %d", len(cmd), MaxHealthcheckArgs))
	case cmd[0] == "":
		return fieldErr(field, ErrInvalidPayload, "names no program: its first element is empty")
	}
	switch strings.ToUpper(cmd[0]) {
	case "CMD", "CMD-SHELL", "NONE":
		return fieldErr(field, ErrInvalidPayload, fmt.Sprintf(
			`starts with Docker's marker %s; give the argv alone (it runs as ["CMD", ...]), or ["/bin/sh", "-c", "..."] for a shell`, quote(cmd[0])))
	}
	for i, arg := range cmd {
		if len(arg) > MaxHealthcheckArgBytes {
			return fieldErr(field, ErrInvalidPayload, fmt.Sprintf("argument %d is %d bytes, over the limit of %d", i, len(arg), MaxHealthcheckArgBytes))
		}
		if strings.IndexByte(arg, 0) >= 0 {
			return fieldErr(field, ErrInvalidPayload, fmt.Sprintf("argument %d holds a NUL byte, which no argv can", i))
		}
	}
	return nil
}

// check validates a HealthSpec built or changed by hand.
func (h *HealthSpec) check() error {
	if h == nil {
		return nil
	}
	_, err := ResolveHealthcheck(&Healthcheck{
		Command: h.Command, IntervalMillis: h.Interval.Milliseconds(), TimeoutMillis: h.Timeout.Milliseconds(),
		StartPeriodMillis: h.StartPeriod.Milliseconds(), Retries: h.Retries,
	})
	if err == nil && (h.Interval%time.Millisecond != 0 || h.Timeout%time.Millisecond != 0 || h.StartPeriod%time.Millisecond != 0) {
		err = fieldErr("healthcheck", ErrInvalidPayload, "durations must be whole milliseconds")
	}
	return err
}

// readyTimeout resolves a payload's ready_timeout_seconds: absent takes
// the policy default, otherwise MinReadyTimeoutSeconds..the policy's
// maximum in whole seconds.
func (p Policy) readyTimeout(seconds *int) (time.Duration, error) {
	if seconds == nil {
		return p.DefaultReadyTimeout, nil
	}
	maxSeconds := int64(p.MaxReadyTimeout / time.Second)
	if s := int64(*seconds); s < MinReadyTimeoutSeconds || s > maxSeconds {
		return 0, fieldErr("ready_timeout_seconds", ErrInvalidPayload, fmt.Sprintf(
			"%d is outside %d..%d; leave it out for the default of %d", s, MinReadyTimeoutSeconds, maxSeconds, int64(p.DefaultReadyTimeout/time.Second)))
	}
	return time.Duration(*seconds) * time.Second, nil
}
