package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CredentialHelper is a docker-credential-<Name> executable written by a
// test: it speaks the docker-credential-helpers protocol ("get" reads a
// server address on stdin and prints {"ServerURL", "Username", "Secret"})
// for one server, and answers "credentials not found in native keychain"
// for any other, as the real helpers do. Every call is appended to Calls.
type CredentialHelper struct {
	// Name is the suffix after docker-credential- (what credsStore and
	// credHelpers name).
	Name string
	// Dir holds the executable; put it on PATH.
	Dir string
	// Calls is the file each call appends "<action> <server>" to.
	Calls string
}

// InstallCredentialHelper writes a helper that serves user and secret for
// server, in a new directory that it prepends to PATH for the rest of the
// test (so the test cannot be parallel).
func InstallCredentialHelper(t testing.TB, name, server, user, secret string) CredentialHelper {
	t.Helper()
	for _, s := range []string{name, server, user, secret} {
		if strings.ContainsAny(s, "'\"\\\n$`") {
			t.Fatalf("credential helper: %q needs quoting; use plain values", s)
		}
	}
	h := CredentialHelper{Name: name, Dir: t.TempDir()}
	h.Calls = filepath.Join(h.Dir, "calls.log")
	script := fmt.Sprintf(`#!/bin/sh
# A test's docker-credential-helpers protocol server for one registry.
action="$1"
read -r server
echo "$action $server" >> '%s'
case "$action" in
get)
	if [ "$server" = '%s' ]; then
		printf '{"ServerURL":"%%s","Username":"%%s","Secret":"%%s"}\n' '%s' '%s' '%s'
		exit 0
	fi
	echo "credentials not found in native keychain"
	exit 1
	;;
*)
	echo "unsupported action: $action"
	exit 1
	;;
esac
`, h.Calls, server, server, user, secret)
	if err := os.WriteFile(filepath.Join(h.Dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", h.Dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return h
}

// CallLog returns the helper's calls so far, one per line.
func (h CredentialHelper) CallLog() string {
	b, _ := os.ReadFile(h.Calls)
	return string(b)
}
