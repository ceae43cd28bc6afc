package engine_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
)

// brokenLists answers the first failures image lists itself, as a daemon
// on the containerd image store does when an image is removed while it
// lists (404, "content digest …: not found"), and passes every other
// request to the real daemon.
type brokenLists struct {
	next     http.RoundTripper
	failures int32
	lists    atomic.Int32
}

func (b *brokenLists) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/images/json") {
		return b.next.RoundTrip(req)
	}
	if b.lists.Add(1) > b.failures {
		return b.next.RoundTrip(req)
	}
	body := `{"message":"content digest sha256:f50353cdd656adfad8d9371994d9f2d18cbe2eca5a630263a1761eec8c2deb98: not found"}`
	return &http.Response{
		StatusCode: http.StatusNotFound, Status: "404 Not Found", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: req,
	}, nil
}

// TestListImagesOutlastsAConcurrentRemoval: the image collector's list
// survives the daemon's "not found" of an image removed meanwhile (seen
// on Docker 26 with the containerd store beside tests that remove
// images), and gives up, with the daemon's error, when it persists.
func TestListImagesOutlastsAConcurrentRemoval(t *testing.T) {
	t.Parallel()
	image := dockertest.EngineImage(t)
	for _, tc := range []struct {
		failures int32
		ok       bool
	}{{failures: 2, ok: true}, {failures: 100, ok: false}} {
		b := &brokenLists{failures: tc.failures}
		d := dockertest.EngineWith(t, engine.Options{
			HostID: dockertest.UniqueName(t),
			WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
				b.next = rt
				return b
			},
		})
		images, err := d.ListImages(t.Context())
		if !tc.ok {
			if err == nil || !strings.Contains(err.Error(), "not found") || b.lists.Load() != 5 {
				t.Errorf("%d failures: %d lists, err %v; want 5 lists and the daemon's error", tc.failures, b.lists.Load(), err)
			}
			continue
		}
		if err != nil || b.lists.Load() != tc.failures+1 {
			t.Fatalf("%d failures: %d lists, err %v", tc.failures, b.lists.Load(), err)
		}
		found := false
		for _, im := range images {
			for _, tag := range im.RepoTags {
				found = found || tag == image
			}
		}
		if !found {
			t.Errorf("the list read after the failures misses %s: %+v", image, images)
		}
	}
}
