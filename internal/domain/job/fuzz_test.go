package job

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDecode feeds arbitrary jobs to Decode: it must never panic, every
// refusal must be a permanent *FieldError, and every accepted job must
// pass its own validation with a state path inside the root.
func FuzzDecode(f *testing.F) {
	f.Add("start", "g1", []byte(startWith(`"env":{"A":"1"},"limits":{"memory_bytes":1073741824},"state_dir":"g1/a/b"`)))
	f.Add("start", "g1", []byte(startWith(`"state_dir":"../../etc"`)))
	f.Add("start", "g-2", []byte(`{"image_ref":"galaxy/engine@sha256:`+digestHex+`"}`))
	f.Add("change_image", "g1", []byte(`{"image_ref":"nginx:1.25","env":{"RTM_X":"1"}}`))
	f.Add("stop", "g1", []byte(`{"timeout_seconds":5}`))
	f.Add("restart", "g1", []byte(`null`))
	f.Add("remove", "g1", []byte(``))
	f.Add("remove", "G1", []byte(`{} {}`))
	f.Add("start", "g1", []byte(`{"IMAGE_REF":"x","image_ref":"y"}`))
	f.Add("stop", "g1", []byte(`{"timeout_seconds":[[[[[[[[[[[1]]]]]]]]]]]}`))

	p := testPolicy()
	f.Fuzz(func(t *testing.T, kind, gameID string, raw []byte) {
		spec, err := Decode(kind, gameID, raw, p)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !IsPermanent(err) {
				t.Fatalf("refusal %q is not a permanent *FieldError", err)
			}
			if !strings.HasPrefix(err.Error(), fe.Field+": ") {
				t.Fatalf("refusal %q does not start with its field %q", err, fe.Field)
			}
			return
		}
		if err := spec.Validate(p); err != nil {
			t.Fatalf("accepted spec %+v fails validation: %v", spec, err)
		}
		if spec.Kind == KindStart && !InsideGameDir(p.StateRoot, gameID, spec.StatePath) {
			t.Fatalf("state path %q is not inside the directory of game %q in %q", spec.StatePath, gameID, p.StateRoot)
		}
		if string(spec.Kind) != kind || spec.GameID != gameID {
			t.Fatalf("spec %+v does not describe job %q %q", spec, kind, gameID)
		}
	})
}
