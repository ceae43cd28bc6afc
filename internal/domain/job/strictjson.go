package job

// The strict JSON decoder the payloads go through: encoding/json with what
// it lets through refused (see decodeStrict).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// decodeStrict decodes raw into the struct v points to, refusing what
// encoding/json lets through: keys that match a field only when case is
// ignored ("IMAGE_REF"), duplicate keys (other parsers would keep the
// other copy), invalid UTF-8 (silently replaced), non-objects and
// trailing data.
func decodeStrict(raw []byte, v any) error {
	raw = bytes.Trim(raw, " \t\r\n")
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	if string(raw) == "{}" {
		// What most stop, restart and remove jobs carry: decoding it
		// changes nothing in v and cannot fail.
		return nil
	}
	if !utf8.Valid(raw) {
		return fieldErr("payload", ErrInvalidPayload, "is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fieldErr("payload", ErrInvalidPayload, "is not JSON: "+err.Error())
	}
	if tok != json.Delim('{') {
		return fieldErr("payload", ErrInvalidPayload, fmt.Sprintf("must be a JSON object, not %s", jsonKind(tok)))
	}
	if err := walkObject(dec, cachedShapeOf(reflect.TypeOf(v).Elem()), "", 1); err != nil {
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return fieldErr("payload", ErrInvalidPayload, "has invalid data after the JSON object: "+err.Error())
		}
		return fieldErr("payload", ErrInvalidPayload, fmt.Sprintf("has trailing data after the JSON object (%s); send exactly one object", jsonKind(tok)))
	}

	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := typeErr.Field
			if field == "" {
				field = "payload"
			}
			return fieldErr(field, sentinelFor(field), fmt.Sprintf("got a JSON %s, want %s", truncate(typeErr.Value), jsonType(typeErr.Type)))
		}
		return fieldErr("payload", ErrInvalidPayload, err.Error())
	}
	return nil
}

// sentinelFor picks the sentinel of a mistyped field.
func sentinelFor(field string) error {
	switch {
	case field == "limits" || strings.HasPrefix(field, "limits."):
		return ErrInvalidLimits
	case field == "env" || strings.HasPrefix(field, "env."):
		return ErrInvalidEnv
	default:
		return ErrInvalidPayload
	}
}

// shape describes the JSON object a Go type decodes from: the exact keys
// of a struct, or any keys for a map. A nil *shape is a scalar.
type shape struct {
	fields  map[string]*shape
	anyKeys bool
}

// shapes caches shapeOf per payload type: the types are a handful, and
// deriving a shape by reflection on every job cost more than the rest of
// a short payload's decoding.
var shapes sync.Map // reflect.Type -> *shape

func cachedShapeOf(t reflect.Type) *shape {
	if sh, ok := shapes.Load(t); ok {
		return sh.(*shape)
	}
	sh, _ := shapes.LoadOrStore(t, shapeOf(t))
	return sh.(*shape)
}

// shapeOf derives the shape of t from its json tags, so the payload
// structs stay the single source of the field names.
func shapeOf(t reflect.Type) *shape {
	switch t.Kind() {
	case reflect.Pointer:
		return shapeOf(t.Elem())
	case reflect.Map:
		return &shape{anyKeys: true}
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			s.fields[name] = shapeOf(f.Type)
		}
		return s
	default:
		return nil
	}
}

// walkObject reads the members of an object whose '{' was consumed,
// checking keys against sh (nil: only duplicates are checked).
func walkObject(dec *json.Decoder, sh *shape, path string, depth int) error {
	if depth > MaxJSONDepth {
		return fieldErr(fieldPath(path), ErrInvalidPayload, fmt.Sprintf("nests deeper than %d levels", MaxJSONDepth))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fieldErr(fieldPath(path), ErrInvalidPayload, syntaxDetail(err))
		}
		key := tok.(string) // object keys are always strings
		child := joinPath(path, key, sh)
		if seen[key] {
			return fieldErr(child, ErrInvalidPayload, "appears more than once; send each key once")
		}
		seen[key] = true
		var next *shape
		if sh != nil && !sh.anyKeys {
			s, ok := sh.fields[key]
			if !ok {
				return fieldErr(child, sentinelFor(child), fmt.Sprintf("is not a known field; known fields here are %s (names are case-sensitive)", knownFields(sh)))
			}
			next = s
		}
		if err := walkValue(dec, next, child, depth); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fieldErr(fieldPath(path), ErrInvalidPayload, syntaxDetail(err))
	}
	return nil
}

// walkValue reads one value; types are left to encoding/json.
func walkValue(dec *json.Decoder, sh *shape, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fieldErr(path, ErrInvalidPayload, syntaxDetail(err))
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, sh, path, depth+1)
	case json.Delim('['):
		if depth+1 > MaxJSONDepth {
			return fieldErr(path, ErrInvalidPayload, fmt.Sprintf("nests deeper than %d levels", MaxJSONDepth))
		}
		for dec.More() {
			if err := walkValue(dec, nil, path, depth+1); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing ']'
			return fieldErr(path, ErrInvalidPayload, syntaxDetail(err))
		}
	}
	return nil
}

// joinPath names a member of the object at path: "limits.nano_cpus"
// for a known field, as UnmarshalTypeError does, and with the key quoted
// when it is untrusted text (a map key or an unknown field), as in
// env["A=B"] or "IMAGE_REF".
func joinPath(path, key string, sh *shape) string {
	switch {
	case sh != nil && sh.anyKeys:
		return path + "[" + quote(key) + "]"
	case sh != nil && !hasField(sh, key):
		key = quote(key)
	case sh == nil:
		key = quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func hasField(sh *shape, key string) bool {
	_, ok := sh.fields[key]
	return ok
}

func fieldPath(path string) string {
	if path == "" {
		return "payload"
	}
	return path
}

func knownFields(sh *shape) string {
	names := make([]string, 0, len(sh.fields))
	for name := range sh.fields {
		names = append(names, name)
	}
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// syntaxDetail describes a JSON syntax error.
func syntaxDetail(err error) string {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return "is cut short: the JSON ends before the value is complete"
	}
	return "is not valid JSON: " + err.Error()
}

// truncate bounds untrusted text that is not quoted (such as the number
// text in a JSON type error) for an error message.
func truncate(s string) string {
	const maxText = 64
	if len(s) > maxText {
		return s[:maxText] + "…"
	}
	return s
}

func jsonKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return "an array"
		}
		return "a " + string(tok)
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%T", tok)
	}
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "an object"
	case reflect.Slice:
		return "an array"
	default:
		return t.String()
	}
}
