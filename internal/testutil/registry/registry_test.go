package registry_test

import (
	"context"
	"testing"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
)

// The harness itself: a registry with and without auth takes a push
// through the daemon and serves the manifest; with auth, an anonymous
// request is refused.
func TestRegistry(t *testing.T) {
	cli := dockertest.Client(t)
	img := dockertest.EngineImage(t)
	for _, auth := range []bool{false, true} {
		t.Run(map[bool]string{false: "anonymous", true: "htpasswd"}[auth], func(t *testing.T) {
			r := registry.Start(t, registry.Options{Auth: auth})
			ref, digest := r.Push(t, cli, img, "galaxy/engine:v1")
			if digest == "" || ref != r.Host+"/galaxy/engine:v1" {
				t.Fatalf("Push = %q, %q", ref, digest)
			}
			ok, err := r.HasManifest(t.Context(), "galaxy/engine", "v1")
			if err != nil || !ok {
				t.Fatalf("HasManifest = %v, %v; log:\n%s", ok, err, r.Log())
			}
			if auth {
				resp, err := r.HTTPClient().Get("http://" + r.Host + "/v2/galaxy/engine/manifests/v1")
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Fatalf("anonymous GET = %s, want 401", resp.Status)
				}
				// A push without credentials is refused by the daemon.
				if _, err := cli.ImageTag(t.Context(), client.ImageTagOptions{Source: img, Target: r.Ref("galaxy/engine:anon")}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_, _ = cli.ImageRemove(context.Background(), r.Ref("galaxy/engine:anon"), client.ImageRemoveOptions{})
				})
				resp2, err := cli.ImagePush(t.Context(), r.Ref("galaxy/engine:anon"), client.ImagePushOptions{RegistryAuth: "e30="}) // {}
				if err == nil {
					err = resp2.Wait(t.Context())
				}
				if err == nil {
					t.Fatal("anonymous push succeeded on a registry with auth")
				}
			}
			// Stopped, it refuses connections; restarted, it serves the same images.
			r.Stop()
			if _, err := r.HTTPClient().Get("http://" + r.Host + "/v2/"); err == nil {
				t.Fatal("the stopped registry answered")
			}
			r.Restart()
			if ok, err := r.HasManifest(t.Context(), "galaxy/engine", "v1"); err != nil || !ok {
				t.Fatalf("after restart HasManifest = %v, %v", ok, err)
			}
		})
	}
}
