package dockertest

import (
	"fmt"
	"regexp"
	"testing"
)

// recordingTB records how a helper ended the test.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestUnavailableSkipsLocallyFailsInCI(t *testing.T) {
	t.Setenv("CI", "")
	local := &recordingTB{TB: t}
	unavailable(local, "no daemon")
	if local.skipped == "" || local.failed != "" {
		t.Errorf("without CI: skipped=%q failed=%q, want a skip", local.skipped, local.failed)
	}

	t.Setenv("CI", "true")
	ci := &recordingTB{TB: t}
	unavailable(ci, "no daemon")
	if ci.failed == "" || ci.skipped != "" {
		t.Errorf("with CI: skipped=%q failed=%q, want a failure", ci.skipped, ci.failed)
	}
}

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]+$`)
	t.Run("Sub/With Spaces_AND_CAPS", func(t *testing.T) {
		a, b := UniqueName(t), UniqueName(t)
		if a == b || !valid.MatchString(a) || len(a) > 64 {
			t.Errorf("UniqueName = %q, %q", a, b)
		}
	})
}
