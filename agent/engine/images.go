package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
)

// EnsureImage implements Engine: nothing happens when the daemon has ref;
// otherwise ref is pulled, with credentials for its registry from the
// Docker config file when it has inline ones.
func (d *Docker) EnsureImage(ctx context.Context, ref string) error {
	ictx, cancel := d.callCtx(ctx, 0)
	_, err := d.cli.ImageInspect(ictx, ref)
	cancel()
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	auth, err := registryAuth(d.configDir, ref)
	if err != nil {
		return fmt.Errorf("pull image %s: registry credentials: %w", ref, err)
	}
	resp, err := d.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, mapErr(err))
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pull image %s: %w", ref, mapErr(err))
	}
	ictx, cancel = d.callCtx(ctx, 0)
	defer cancel()
	if _, err := d.cli.ImageInspect(ictx, ref); err != nil {
		return fmt.Errorf("inspect image %s after pull: %w", ref, mapErr(err))
	}
	return nil
}

// ImageLabels returns the labels of a local image (ErrNotFound if the daemon
// does not have it). Not part of Engine: used by the engine-image builder.
func (d *Docker) ImageLabels(ctx context.Context, ref string) (map[string]string, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	img, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w", ref, mapErr(err))
	}
	if img.Config == nil {
		return map[string]string{}, nil
	}
	return maps0(img.Config.Labels), nil
}

// ImportImage creates image ref from a root filesystem tarball, applying
// Dockerfile-style changes ("CMD [\"/engine\"]", "EXPOSE 8080", "LABEL k=v").
// Not part of Engine: used by the engine-image builder.
func (d *Docker) ImportImage(ctx context.Context, ref string, rootfs io.Reader, changes []string) error {
	res, err := d.cli.ImageImport(ctx,
		client.ImageImportSource{Source: rootfs, SourceName: "-"},
		ref, client.ImageImportOptions{Changes: changes})
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	defer res.Close()
	dec := json.NewDecoder(res)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("import image %s: read progress: %w", ref, err)
		}
		if m.Error != nil {
			return fmt.Errorf("import image %s: %w", ref, m.Error)
		}
	}
}

// dockerConfigFile is the part of ~/.docker/config.json used here.
type dockerConfigFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
}

// registryAuth returns the encoded X-Registry-Auth value for ref's registry
// from config.json, or "" when there is no inline entry for it.
//
// TODO: credential helpers (credsStore/credHelpers) are not consulted; with
// them the pull is anonymous.
func registryAuth(configDir, ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("parse image reference: %w", err)
	}
	domain := reference.Domain(named)
	if configDir == "" {
		configDir = os.Getenv("DOCKER_CONFIG")
	}
	if configDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", nil
		}
		configDir = filepath.Join(home, ".docker")
	}
	raw, err := os.ReadFile(filepath.Join(configDir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var cfg dockerConfigFile
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("parse %s: %w", filepath.Join(configDir, "config.json"), err)
	}
	for key, entry := range cfg.Auths {
		if registryHost(key) != domain {
			continue
		}
		ac := registry.AuthConfig{
			Username:      entry.Username,
			Password:      entry.Password,
			IdentityToken: entry.IdentityToken,
			ServerAddress: key,
		}
		if entry.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(entry.Auth)
			if err != nil {
				return "", fmt.Errorf("decode auth for %s: %w", key, err)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return "", fmt.Errorf("decode auth for %s: no ':' separator", key)
			}
			ac.Username, ac.Password = user, pass
		}
		if ac.Username == "" && ac.IdentityToken == "" {
			continue
		}
		return authconfig.Encode(ac)
	}
	return "", nil
}

// registryHost normalises a config.json "auths" key to a reference domain.
func registryHost(key string) string {
	h := key
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return h
}
