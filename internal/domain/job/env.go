package job

import (
	"fmt"
	"slices"
	"strings"
)

const (
	// ReservedEnvPrefix starts the names the agent sets itself; a job may
	// not set or override them (compared case-insensitively, to leave no
	// look-alike).
	ReservedEnvPrefix = "RTM_"
)

// envNameRule is the rule quoted in error messages.
const envNameRule = "a name matches ^[A-Za-z_][A-Za-z0-9_]*$ and does not start with " + ReservedEnvPrefix

// EnvEntries validates env against p and returns it as "NAME=value"
// entries sorted by name (nil when empty). Names must match
// ^[A-Za-z_][A-Za-z0-9_]*$, so "A=B" cannot smuggle a second variable,
// and must not start with ReservedEnvPrefix; values must not contain
// NUL, which would cut them short, or line breaks, which forge lines in
// env files and logs. Errors wrap ErrInvalidEnv.
func (p Policy) EnvEntries(env map[string]string) ([]string, error) {
	if len(env) > p.MaxEnvVars {
		return nil, fieldErr("env", ErrInvalidEnv, fmt.Sprintf("has %d variables, over the limit of %d", len(env), p.MaxEnvVars))
	}
	if len(env) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	slices.Sort(names) // so the first error reported does not depend on map order
	entries := make([]string, 0, len(names))
	for _, name := range names {
		if err := p.checkEnvVar(name, env[name]); err != nil {
			return nil, err
		}
		entries = append(entries, name+"="+env[name])
	}
	return entries, nil
}

// checkEnvEntries checks entries as EnvEntries returns them.
func (p Policy) checkEnvEntries(entries []string) error {
	if len(entries) > p.MaxEnvVars {
		return fieldErr("env", ErrInvalidEnv, fmt.Sprintf("has %d variables, over the limit of %d", len(entries), p.MaxEnvVars))
	}
	prev := ""
	for i, entry := range entries {
		name, value, ok := strings.Cut(entry, "=")
		if !ok {
			return fieldErr("env", ErrInvalidEnv, fmt.Sprintf("entry %s is not NAME=value", quote(entry)))
		}
		if i > 0 && name <= prev {
			return fieldErr("env", ErrInvalidEnv, "entries are not sorted by name or repeat a name")
		}
		prev = name
		if err := p.checkEnvVar(name, value); err != nil {
			return err
		}
	}
	return nil
}

func (p Policy) checkEnvVar(name, value string) error {
	field := "env[" + quote(name) + "]"
	bad := func(why string) error { return fieldErr(field, ErrInvalidEnv, why) }
	switch {
	case name == "":
		return bad("the name is empty; " + envNameRule)
	case len(name) > MaxEnvNameBytes:
		return bad(fmt.Sprintf("the name is %d bytes long, over the limit of %d", len(name), MaxEnvNameBytes))
	case !isEnvName(name):
		return bad("the name is not valid; " + envNameRule)
	case strings.HasPrefix(strings.ToUpper(name), ReservedEnvPrefix):
		return bad("the name is reserved for the agent; " + envNameRule)
	case len(value) > p.MaxEnvValueBytes:
		return bad(fmt.Sprintf("the value is %d bytes long, over the limit of %d", len(value), p.MaxEnvValueBytes))
	case strings.ContainsRune(value, 0):
		return bad("the value contains a NUL byte")
	case strings.ContainsAny(value, "\n\r"):
		return bad("the value contains a line break")
	}
	return nil
}

func isEnvName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return name != ""
}
