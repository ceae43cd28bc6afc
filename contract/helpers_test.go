package contract_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/galaxy/rtmanager/contract"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// compiler holds every schema file; compile, under mu, compiles one by
// reference (a file path, or a path and a JSON pointer).
var (
	mu       sync.Mutex
	compiler *jsonschema.Compiler
	cache    = map[string]*jsonschema.Schema{}
)

func compile(ref string) (*jsonschema.Schema, error) {
	mu.Lock()
	defer mu.Unlock()
	if compiler == nil {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat() // date-time is checked, as a strict consumer would
		for _, path := range contract.Files() {
			doc, err := loadFile(path)
			if err != nil {
				return nil, err
			}
			if err := c.AddResource(contract.ID(path), doc); err != nil {
				return nil, fmt.Errorf("add %s: %w", path, err)
			}
		}
		compiler = c
	}
	if s, ok := cache[ref]; ok {
		return s, nil
	}
	s, err := compiler.Compile(contract.ID(ref))
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", ref, err)
	}
	cache[ref] = s
	return s, nil
}

// compiled compiles every schema file.
func compiled() error {
	for _, path := range contract.Files() {
		if _, err := compile(path); err != nil {
			return err
		}
	}
	return nil
}

func loadFile(path string) (any, error) {
	b, err := contract.FS.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return doc, nil
}

func schema(t testing.TB, ref string) *jsonschema.Schema {
	t.Helper()
	s, err := compile(ref)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validateRaw parses raw as a JSON text and validates it against the
// schema at path; a text that is not one JSON value is invalid.
func validateRaw(t testing.TB, path string, raw []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := schema(t, path).Validate(v); err != nil {
		return fmt.Errorf("%#v", err) // every cause, not the first line only
	}
	return nil
}

// validateValue validates a Go value by its JSON encoding.
func validateValue(t testing.TB, path string, v any) error {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return validateRaw(t, path, raw)
}

// agentPolicy is the agent's policy with an allow-list admitting the
// payload's image (the allow-list is host configuration, not contract),
// as rtmclient checks jobs.
func agentPolicy(raw []byte) job.Policy {
	p := job.DefaultPolicy()
	p.StateRoot = "/srv/rtm-state"
	var img struct {
		ImageRef string `json:"image_ref"`
	}
	if json.Unmarshal(raw, &img) == nil && img.ImageRef != "" {
		if named, err := reference.ParseNormalizedNamed(img.ImageRef); err == nil {
			p.AllowedImages = []string{named.Name()}
		}
	}
	return p
}

// agentDecode is the agent's verdict on a job.
func agentDecode(kind, gameID string, raw []byte) error {
	_, err := job.Decode(kind, gameID, raw, agentPolicy(raw))
	return err
}

// The differences between the schemas and the agent, each a payload the
// schema accepts and the agent refuses, because the schema cannot see
// what decides it. The README's "Bounds and rules" says the same.
const (
	// The first element of state_dir must be the job's game id: a
	// payload schema does not know the game id (it is another column).
	exStateDirGame = "state_dir_game"
	// An integer written with a fraction or an exponent (5.0, 1e9) is an
	// integer to JSON Schema; the agent's decoder wants digits only.
	exIntegerNotation = "integer_notation"
	// An env value's bound is in UTF-8 bytes; JSON Schema counts
	// characters, so a value with multi-byte characters can pass.
	exEnvValueBytes = "env_value_bytes"
	// The repository path of an image, normalized (docker.io/library/
	// added to a bare name), is at most 255 characters; a pattern cannot
	// count that.
	exImagePathLength = "image_path_length"
	// The payload's JSON text is at most MaxPayloadBytes; JSON Schema
	// sees values, not their text (the schemas carry the bound as the
	// x-max-payload-bytes annotation).
	exPayloadBytes = "payload_bytes"
	// What a JSON parser hides from a schema validator: duplicate keys
	// (the last one wins; jsonb keeps only the last too) and invalid
	// UTF-8 (replaced). The agent refuses both in the raw text.
	exDuplicateKey = "duplicate_key"
	exInvalidUTF8  = "invalid_utf8"
	// A health check argument's bound is in UTF-8 bytes, as an env
	// value's.
	exHealthArgBytes = "healthcheck_arg_bytes"
)

// classify names the exception that explains why the agent refused a
// schema-valid payload with err, or returns "".
func classify(err error) string {
	var fe *job.FieldError
	if !errors.As(err, &fe) {
		return ""
	}
	d := fe.Detail
	switch {
	case errors.Is(err, job.ErrStateDirOutsideRoot) && strings.Contains(d, "does not start with the game id"):
		return exStateDirGame
	case strings.HasPrefix(d, "got a JSON number ") && strings.ContainsAny(strings.TrimPrefix(d, "got a JSON number "), ".eE"):
		return exIntegerNotation
	case errors.Is(err, job.ErrInvalidEnv) && strings.HasPrefix(d, "the value is ") && strings.Contains(d, "bytes long"):
		return exEnvValueBytes
	case fe.Field == "image_ref" && strings.Contains(d, "repository name must not be more than 255 characters"):
		return exImagePathLength
	case fe.Field == "payload" && strings.Contains(d, fmt.Sprintf("over the limit of %d", job.MaxPayloadBytes)):
		return exPayloadBytes
	case strings.Contains(d, "appears more than once"):
		return exDuplicateKey
	case strings.Contains(d, "is not valid UTF-8"):
		return exInvalidUTF8
	case fe.Field == "healthcheck.command" && strings.Contains(d, fmt.Sprintf("bytes, over the limit of %d", job.MaxHealthcheckArgBytes)):
		return exHealthArgBytes
	}
	return ""
}

// normalize reads a payload as the agent does before it looks at the
// JSON: surrounding whitespace dropped, an empty text is {}.
func normalize(raw []byte) []byte {
	if len(bytes.Trim(raw, " \t\r\n")) == 0 {
		return []byte("{}")
	}
	return raw
}

// compare checks one job payload both ways: what the agent accepts, the
// schema accepts; what the schema accepts and the agent refuses is one
// of the listed exceptions. It returns the agent's verdict and the
// exception that applied ("" for none); ok is false when it reported a
// failure.
func compare(t testing.TB, kind, gameID string, raw []byte) (exception string, ok bool, agentErr error) {
	t.Helper()
	agentErr = agentDecode(kind, gameID, raw)
	if !job.Kind(kind).IsKnown() {
		return "", agentErr != nil, agentErr
	}
	schemaErr := validateRaw(t, contract.JobPayloadFile(kind), normalize(raw))
	switch {
	case agentErr == nil && schemaErr != nil:
		t.Errorf("%s payload %q for game %q: the agent accepts it, the schema refuses it: %v", kind, truncate(raw), gameID, schemaErr)
		return "", false, agentErr
	case agentErr != nil && schemaErr == nil:
		exception = classify(agentErr)
		if exception == "" {
			t.Errorf("%s payload %q for game %q: the schema accepts it, the agent refuses it (%v), and no listed exception explains it",
				kind, truncate(raw), gameID, agentErr)
			return "", false, agentErr
		}
	}
	return exception, true, agentErr
}

func truncate(raw []byte) string {
	if len(raw) > 200 {
		return string(raw[:200]) + "…"
	}
	return string(raw)
}
