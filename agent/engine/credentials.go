package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/distribution/reference"
	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// ErrCredentials reports registry credentials that could not be read: a
// config.json that does not parse, or a credential helper that failed.
var ErrCredentials = errors.New("registry credentials")

// ConfigDir returns the directory whose config.json holds registry
// credentials: dir when set, else $DOCKER_CONFIG, else ~/.docker — the
// Docker CLI's rule, evaluated at each call (the CLI's own config.Dir
// caches the environment once per process).
func ConfigDir(dir string) string {
	if dir != "" {
		return dir
	}
	if env := os.Getenv(config.EnvOverrideConfigDir); env != "" {
		return env
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".docker")
}

// RegistryAuth returns the X-Registry-Auth value for pulling ref: the
// credentials the Docker CLI would use for ref's registry, or "" to pull
// anonymously. The configuration is read at each pull, so new credentials
// (a rotated token in config.json, a helper's new secret) apply without a
// restart.
//
// The lookup is the Docker CLI's own code (github.com/docker/cli/cli/config):
// "auths" entries (auth, or username and password, or identitytoken), a
// "credsStore" for every registry, a "credHelpers" entry per registry
// taking precedence (both run docker-credential-<name> get, the
// docker-credential-helpers protocol), DOCKER_AUTH_CONFIG, and Docker Hub
// under its historical key "https://index.docker.io/v1/". As in the CLI, a
// configuration without any credential falls back to a platform helper
// (pass or secretservice) when one is installed.
//
// Errors wrap ErrCredentials and never contain a credential.
func (d *Docker) RegistryAuth(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("%w: parse image reference: %w", ErrInvalidSpec, err)
	}
	host := reference.Domain(named)
	dir := ConfigDir(d.configDir)
	if dir == "" {
		return "", nil
	}
	cf, err := config.Load(dir)
	if err != nil {
		return "", fmt.Errorf("%w for %s: %w", ErrCredentials, host, err)
	}
	if !cf.ContainsAuth() {
		cf.CredentialsStore = credentials.DetectDefaultStore(cf.CredentialsStore)
	}
	ac, err := cf.GetAuthConfig(host)
	if err != nil {
		return "", fmt.Errorf("%w for %s from %s: %w", ErrCredentials, host, cf.Filename, err)
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return "", nil
	}
	enc, err := authconfig.Encode(registry.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		ServerAddress: ac.ServerAddress,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	})
	if err != nil {
		return "", fmt.Errorf("%w for %s: encode", ErrCredentials, host)
	}
	return enc, nil
}
