package job

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestDecodeReadiness: the health check and the ready timeout decode into
// the Spec with the policy's default, each bound's edge is accepted and
// one past it refused with a clear, permanent error naming the field.
func TestDecodeReadiness(t *testing.T) {
	p := testPolicy()
	p.DefaultReadyTimeout = 45 * time.Second
	defReady := p.DefaultReadyTimeout

	valid := []struct {
		name, kind, raw string
		health          *HealthSpec
		ready           time.Duration
	}{
		{"start without either", "start", startWith(""), nil, defReady},
		{"start with nulls", "start", startWith(`"healthcheck":null,"ready_timeout_seconds":null`), nil, defReady},
		{"start with a command only", "start", startWith(`"healthcheck":{"command":["/engine","healthcheck"]}`),
			&HealthSpec{Command: []string{"/engine", "healthcheck"}}, defReady},
		{"start with everything at the maxima", "start", startWith(fmt.Sprintf(
			`"healthcheck":{"command":["/bin/sh","-c","exit 0"],"interval_ms":%d,"timeout_ms":%d,"start_period_ms":%d,"retries":%d},"ready_timeout_seconds":%d`,
			MaxHealthcheckMillis, MaxHealthcheckMillis, MaxHealthcheckStartPeriodMillis, MaxHealthcheckRetries, MaxReadyTimeoutSeconds)),
			&HealthSpec{Command: []string{"/bin/sh", "-c", "exit 0"}, Interval: 10 * time.Minute, Timeout: 10 * time.Minute,
				StartPeriod: time.Hour, Retries: MaxHealthcheckRetries}, time.Hour},
		{"start at the minima", "start", startWith(fmt.Sprintf(
			`"healthcheck":{"command":["x"],"interval_ms":%d,"timeout_ms":%d,"start_period_ms":%d,"retries":1},"ready_timeout_seconds":%d`,
			MinHealthcheckMillis, MinHealthcheckMillis, MinHealthcheckMillis, MinReadyTimeoutSeconds)),
			&HealthSpec{Command: []string{"x"}, Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond,
				StartPeriod: 100 * time.Millisecond, Retries: 1}, time.Second},
		{"change_image", "change_image", `{"image_ref":"galaxy/engine:2","healthcheck":{"command":["/engine","healthcheck"],"interval_ms":200},"ready_timeout_seconds":5}`,
			&HealthSpec{Command: []string{"/engine", "healthcheck"}, Interval: 200 * time.Millisecond}, 5 * time.Second},
		{"restart default", "restart", `{}`, nil, defReady},
		{"restart", "restart", `{"timeout_seconds":3,"ready_timeout_seconds":7}`, nil, 7 * time.Second},
		{"stop has none", "stop", `{}`, nil, 0},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.kind, "g1", []byte(tt.raw), p)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got.Healthcheck, tt.health) || got.ReadyTimeout != tt.ready {
				t.Fatalf("Decode: health %+v, ready %s; want %+v, %s", got.Healthcheck, got.ReadyTimeout, tt.health, tt.ready)
			}
			if err := got.Validate(p); err != nil {
				t.Fatalf("Validate of a decoded spec: %v", err)
			}
		})
	}

	long := strings.Repeat("a", MaxHealthcheckArgBytes+1)
	many := `"x"` + strings.Repeat(`,"x"`, MaxHealthcheckArgs)
	hc := func(members string) string { return startWith(`"healthcheck":{` + members + `}`) }
	invalid := []struct{ name, kind, raw, field, says string }{
		{"no command", "start", hc(`"interval_ms":200`), "healthcheck.command", "required"},
		{"empty command", "start", hc(`"command":[]`), "healthcheck.command", "required"},
		{"command as a string", "start", hc(`"command":"/engine healthcheck"`), "healthcheck.command", "array"},
		{"command of numbers", "start", hc(`"command":[1]`), "healthcheck.command", "string"},
		{"empty program", "start", hc(`"command":["","x"]`), "healthcheck.command", "first element is empty"},
		{"Docker's CMD marker", "start", hc(`"command":["CMD","/engine"]`), "healthcheck.command", "marker"},
		{"Docker's CMD-SHELL marker", "start", hc(`"command":["CMD-SHELL","curl x"]`), "healthcheck.command", "marker"},
		{"Docker's NONE marker", "change_image", `{"image_ref":"galaxy/engine","healthcheck":{"command":["none"]}}`, "healthcheck.command", "marker"},
		{"too many arguments", "start", hc(`"command":[` + many + `]`), "healthcheck.command", "arguments"},
		{"argument too long", "start", hc(`"command":["` + long + `"]`), "healthcheck.command", "bytes"},
		{"NUL in an argument", "start", hc(`"command":["a\u0000b"]`), "healthcheck.command", "NUL"},
		{"interval too short", "start", hc(fmt.Sprintf(`"command":["x"],"interval_ms":%d`, MinHealthcheckMillis-1)), "healthcheck.interval_ms", "outside"},
		{"interval too long", "start", hc(fmt.Sprintf(`"command":["x"],"interval_ms":%d`, MaxHealthcheckMillis+1)), "healthcheck.interval_ms", "outside"},
		{"negative timeout", "start", hc(`"command":["x"],"timeout_ms":-1`), "healthcheck.timeout_ms", "outside"},
		{"start period too long", "start", hc(fmt.Sprintf(`"command":["x"],"start_period_ms":%d`, MaxHealthcheckStartPeriodMillis+1)), "healthcheck.start_period_ms", "outside"},
		{"interval with a fraction", "start", hc(`"command":["x"],"interval_ms":200.5`), "healthcheck.interval_ms", "integer"},
		{"negative retries", "start", hc(`"command":["x"],"retries":-1`), "healthcheck.retries", "outside"},
		{"too many retries", "start", hc(fmt.Sprintf(`"command":["x"],"retries":%d`, MaxHealthcheckRetries+1)), "healthcheck.retries", "outside"},
		{"unknown healthcheck key", "start", hc(`"command":["x"],"Interval":200`), "healthcheck.", "not a known field"},
		{"duration as a string", "start", hc(`"command":["x"],"interval_ms":"1s"`), "healthcheck.interval_ms", "string"},
		{"healthcheck as an array", "start", startWith(`"healthcheck":["x"]`), "healthcheck", "object"},
		{"ready timeout zero", "start", startWith(`"ready_timeout_seconds":0`), "ready_timeout_seconds", "outside"},
		{"ready timeout too long", "change_image", fmt.Sprintf(`{"image_ref":"galaxy/engine","ready_timeout_seconds":%d}`, MaxReadyTimeoutSeconds+1), "ready_timeout_seconds", "outside"},
		{"ready timeout negative", "restart", `{"ready_timeout_seconds":-5}`, "ready_timeout_seconds", "outside"},
		{"ready timeout huge", "restart", `{"ready_timeout_seconds":9223372036854775807}`, "ready_timeout_seconds", "outside"},
		{"restart takes no healthcheck", "restart", `{"healthcheck":{"command":["x"]}}`, `"healthcheck"`, "not a known field"},
		{"stop takes no ready timeout", "stop", `{"ready_timeout_seconds":5}`, `"ready_timeout_seconds"`, "not a known field"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Decode(tt.kind, "g1", []byte(tt.raw), p)
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", spec)
			}
			t.Log(err)
			var fe *FieldError
			if !errors.Is(err, ErrInvalidPayload) || !IsPermanent(err) || !errors.As(err, &fe) {
				t.Fatalf("error %q: want a permanent *FieldError wrapping ErrInvalidPayload", err)
			}
			if !strings.HasPrefix(fe.Field, tt.field) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q (field %q): want field %s and %q in it", err, fe.Field, tt.field, tt.says)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}
}

// TestSpecValidateReadiness: hand-made Specs with readiness settings
// outside the bounds or on the wrong kind are refused.
func TestSpecValidateReadiness(t *testing.T) {
	p := testPolicy()
	start, err := Decode("start", "g1", []byte(startWith(`"healthcheck":{"command":["x"]}`)), p)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := Decode("stop", "g1", nil, p)
	if err != nil {
		t.Fatal(err)
	}
	restart, err := Decode("restart", "g1", nil, p)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Spec{
		"start without ready timeout": with(start, func(s *Spec) { s.ReadyTimeout = 0 }),
		"ready timeout over the max":  with(start, func(s *Spec) { s.ReadyTimeout = p.MaxReadyTimeout + time.Second }),
		"stop with ready timeout":     with(stop, func(s *Spec) { s.ReadyTimeout = time.Second }),
		"restart with healthcheck":    with(restart, func(s *Spec) { s.Healthcheck = &HealthSpec{Command: []string{"x"}} }),
		"healthcheck without command": with(start, func(s *Spec) { s.Healthcheck = &HealthSpec{} }),
		"interval below the minimum":  with(start, func(s *Spec) { s.Healthcheck = &HealthSpec{Command: []string{"x"}, Interval: time.Millisecond} }),
		"interval not whole ms":       with(start, func(s *Spec) { s.Healthcheck = &HealthSpec{Command: []string{"x"}, Interval: time.Second + 1} }),
	} {
		if err := s.Validate(p); !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("%s: Validate = %v, want ErrInvalidPayload", name, err)
		}
	}
	if err := start.Validate(p); err != nil {
		t.Fatalf("the decoded start: %v", err)
	}
}

// TestPolicyReadyTimeoutBounds: a default ready timeout outside
// 1s..max is the configuration's fault (not permanent).
func TestPolicyReadyTimeoutBounds(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second - 1, MaxReadyTimeoutSeconds*time.Second + 1} {
		p := testPolicy()
		p.DefaultReadyTimeout = d
		_, err := Decode("restart", "g1", nil, p)
		if !errors.Is(err, ErrInvalidPolicy) || IsPermanent(err) {
			t.Errorf("default ready timeout %s: %v, want a non-permanent ErrInvalidPolicy", d, err)
		}
	}
}
