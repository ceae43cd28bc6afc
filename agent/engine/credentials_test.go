package engine

// Registry credentials, read as the Docker CLI reads them. No daemon.

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/pkg/authconfig"

	"github.com/galaxy/rtmanager/internal/testutil/registry"
)

func writeConfig(t *testing.T, dir, cfg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Not parallel: it changes PATH and DOCKER_CONFIG.
func TestRegistryAuth(t *testing.T) {
	helper := registry.InstallCredentialHelper(t, "rtmtest", "helped.example.com", "helper-user", "helper-secret")
	store := registry.InstallCredentialHelper(t, "rtmstore", "stored.example.com", "store-user", "store-secret")
	dir := t.TempDir()
	writeConfig(t, dir, `{
		"auths": {
			"https://index.docker.io/v1/": {"auth": "`+b64("hubuser:hubpass")+`"},
			"registry.example.com:5000": {"auth": "`+b64("me:p:w")+`"},
			"https://ghcr.io": {"identitytoken": "tok"},
			"helped.example.com": {"auth": "`+b64("shadowed:by-the-helper")+`"},
			"empty.example.com": {}
		},
		"credsStore": "rtmstore",
		"credHelpers": {"helped.example.com": "rtmtest"}
	}`)
	t.Setenv("DOCKER_CONFIG", dir)
	d := &Docker{} // no dir of its own: DOCKER_CONFIG

	for _, tc := range []struct {
		ref, user, pass, token string
	}{
		// With a credsStore, "auths" entries are not read (the CLI keeps
		// only e-mail there); every registry asks the store, unless
		// credHelpers names a helper of its own.
		{"stored.example.com/galaxy/engine:1", "store-user", "store-secret", ""},
		{"helped.example.com/galaxy/engine:1", "helper-user", "helper-secret", ""},
		{"registry.example.com:5000/team/engine:v1", "", "", ""},
		{"other.example.com/x:1", "", "", ""},
	} {
		got := decode(t, d, tc.ref)
		if got.Username != tc.user || got.Password != tc.pass || got.IdentityToken != tc.token {
			t.Errorf("RegistryAuth(%s) = user %q pass %q token %q; want %q %q %q", tc.ref, got.Username, got.Password, got.IdentityToken, tc.user, tc.pass, tc.token)
		}
	}
	if log := helper.CallLog(); !strings.Contains(log, "get helped.example.com") || strings.Contains(log, "stored.example.com") {
		t.Errorf("credHelpers helper calls: %q", log)
	}
	if log := store.CallLog(); !strings.Contains(log, "get stored.example.com") || strings.Contains(log, "helped.example.com") {
		t.Errorf("credsStore helper calls: %q", log)
	}

	// Without a credsStore, "auths" is read: auth, identitytoken, Docker
	// Hub under its historical key; credHelpers still win for theirs.
	plain := t.TempDir()
	writeConfig(t, plain, `{
		"auths": {
			"https://index.docker.io/v1/": {"auth": "`+b64("hubuser:hubpass")+`"},
			"registry.example.com:5000": {"auth": "`+b64("me:p:w")+`"},
			"https://ghcr.io": {"identitytoken": "tok"},
			"helped.example.com": {"auth": "`+b64("shadowed:by-the-helper")+`"},
			"empty.example.com": {}
		},
		"credHelpers": {"helped.example.com": "rtmtest"}
	}`)
	d = &Docker{configDir: plain} // Options.DockerConfigDir wins over DOCKER_CONFIG
	for _, tc := range []struct {
		ref, user, pass, token string
	}{
		{"alpine:3", "hubuser", "hubpass", ""},
		{"docker.io/library/alpine", "hubuser", "hubpass", ""},
		{"registry.example.com:5000/team/engine:v1", "me", "p:w", ""},
		{"ghcr.io/org/engine@sha256:" + strings.Repeat("a", 64), "", "", "tok"},
		{"helped.example.com/galaxy/engine:1", "helper-user", "helper-secret", ""},
		{"empty.example.com/x:1", "", "", ""},
		{"other.example.com/x:1", "", "", ""},
	} {
		got := decode(t, d, tc.ref)
		if got.Username != tc.user || got.Password != tc.pass || got.IdentityToken != tc.token {
			t.Errorf("RegistryAuth(%s) = user %q pass %q token %q; want %q %q %q", tc.ref, got.Username, got.Password, got.IdentityToken, tc.user, tc.pass, tc.token)
		}
	}

	// No config.json: anonymous.
	d = &Docker{configDir: t.TempDir()}
	if enc, err := d.RegistryAuth("alpine"); enc != "" || err != nil {
		t.Errorf("without config.json: %q, %v", enc, err)
	}
}

func decode(t *testing.T, d *Docker, ref string) (ac struct{ Username, Password, IdentityToken string }) {
	t.Helper()
	enc, err := d.RegistryAuth(ref)
	if err != nil {
		t.Fatalf("RegistryAuth(%s): %v", ref, err)
	}
	if enc == "" {
		return ac
	}
	got, err := authconfig.Decode(enc)
	if err != nil {
		t.Fatalf("decode auth for %s: %v", ref, err)
	}
	ac.Username, ac.Password, ac.IdentityToken = got.Username, got.Password, got.IdentityToken
	return ac
}

// A configuration that cannot be read, and a helper that fails or is
// missing, are errors (ErrCredentials) that name no secret.
func TestRegistryAuthErrors(t *testing.T) {
	const secret = "s3cr3t-never-shown"
	dir := t.TempDir()
	writeConfig(t, dir, `{"auths": {"a.example.com": {"auth": "`+b64("u:"+secret)+`"}}, `) // cut short
	d := &Docker{configDir: dir}
	_, err := d.RegistryAuth("a.example.com/x:1")
	if !errors.Is(err, ErrCredentials) || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), b64("u:"+secret)) {
		t.Fatalf("broken config.json: %v", err)
	}

	writeConfig(t, dir, `{"credHelpers": {"a.example.com": "rtm-no-such-helper"}}`)
	_, err = d.RegistryAuth("a.example.com/x:1")
	if !errors.Is(err, ErrCredentials) {
		t.Fatalf("missing helper: %v, want ErrCredentials", err)
	}
	t.Logf("missing helper: %v", err)
}
