package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
)

// AuthHeader returns the X-Registry-Auth value of the registry's
// credentials (an empty configuration without auth: Docker 20.10 refuses a
// push without the header).
func (r *Registry) AuthHeader() string {
	ac := registry.AuthConfig{ServerAddress: r.Host}
	if r.User != "" {
		ac.Username, ac.Password = r.User, r.Password
	}
	s, err := authconfig.Encode(ac)
	if err != nil {
		panic(err) // encoding a struct of strings cannot fail
	}
	return s
}

// Push tags the local image src as repoTag on this registry, pushes it
// through the daemon and removes the local tag again, so that the daemon
// has to pull it to use it by that name. It returns the reference and the
// manifest digest the registry stored.
func (r *Registry) Push(t testing.TB, cli *client.Client, src, repoTag string) (ref, digest string) {
	t.Helper()
	ref = r.Ref(repoTag)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: src, Target: ref}); err != nil {
		t.Fatalf("registry: tag %s as %s: %v", src, ref, err)
	}
	digest, err := push(ctx, cli, ref, r.AuthHeader())
	if err != nil {
		t.Fatalf("registry: push %s: %v; the registry's log:\n%s", ref, err, r.Log())
	}
	if digest == "" {
		// The containerd image store reports no digest: ask the registry.
		repo, tag, _ := strings.Cut(repoTag, ":")
		if digest, err = r.ManifestDigest(ctx, repo, cmp.Or(tag, "latest")); err != nil {
			t.Fatalf("registry: digest of %s after its push: %v", ref, err)
		}
	}
	if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
		t.Fatalf("registry: untag %s after the push: %v", ref, err)
	}
	return ref, digest
}

// push pushes ref and returns the digest from the push's aux message.
func push(ctx context.Context, cli *client.Client, ref, auth string) (string, error) {
	resp, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
	if err != nil {
		return "", err
	}
	defer resp.Close()
	var digest string
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return "", err
		}
		if m.Error != nil {
			return "", m.Error
		}
		if m.Aux != nil {
			var aux struct{ Digest string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.Digest != "" {
				digest = aux.Digest
			}
		}
	}
	return digest, nil
}
