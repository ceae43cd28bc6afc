package executor_test

// Jobs that pull from a real registry on loopback.

import (
	"context"
	"encoding/base64"
	"fmt"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/executor"
	"github.com/galaxy/rtmanager/agent/worker"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/registry"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

// registryImages pushes two engine images that run (another id and
// digest each) to r as galaxy/engine:v1 and :v2; locally only their
// source tags are left. It returns the two references and digests.
func registryImages(t *testing.T, r *registry.Registry) (v1, d1, v2, d2 string) {
	t.Helper()
	cli := dockertest.Client(t)
	for i, dst := range []*struct{ ref, digest string }{{}, {}} {
		src := fmt.Sprintf("rtmanager-test-variant:%s-%d", dockertest.UniqueName(t), i+1)
		dockertest.EngineImageVariant(t, src)
		dst.ref, dst.digest = r.Push(t, cli, src, fmt.Sprintf("galaxy/engine:v%d", i+1))
		if i == 0 {
			v1, d1 = dst.ref, dst.digest
		} else {
			v2, d2 = dst.ref, dst.digest
		}
	}
	return v1, d1, v2, d2
}

// configDir writes a Docker config.json and returns its directory.
func configDir(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func basicAuths(host, user, pass string) string {
	return `{"auths": {"` + host + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
}

// eventField reads one payload field of the game's last event of a type.
func (e *env) eventField(gameID, typ, field string) string {
	e.t.Helper()
	var v *string
	err := e.store.Pool().QueryRow(context.Background(),
		`SELECT payload->>$3 FROM outbox WHERE game_id = $1 AND type = $2 ORDER BY id DESC LIMIT 1`, gameID, typ, field).Scan(&v)
	if err != nil {
		e.t.Fatalf("read %s of the last %s event of %s: %v", field, typ, gameID, err)
	}
	if v == nil {
		return ""
	}
	return *v
}

// start, change_image and pull jobs pull from a registry, anonymous and
// with htpasswd credentials; each records the digest it ran. Not found
// and unauthorized fail at once.
func TestJobsPullFromRegistry(t *testing.T) {
	t.Parallel()
	for _, auth := range []bool{false, true} {
		mode := map[bool]string{false: "anonymous", true: "htpasswd"}[auth]
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			r := registry.Start(t, registry.Options{Auth: auth})
			v1, d1, v2, d2 := registryImages(t, r)
			cfg := `{}`
			if auth {
				cfg = basicAuths(r.Host, r.User, r.Password)
			}
			e := newEnvWith(t, engine.Options{DockerConfigDir: configDir(t, cfg), PullBackoff: 10 * time.Millisecond})
			e.policy.AllowedImages = append(e.policy.AllowedImages, r.Host+"/galaxy/*")
			e.run()

			// Warm the host: the image is there afterwards, its digest in
			// the job's event.
			id := e.insert("warm", "pull", fmt.Sprintf(`{"image_ref": %q}`, v1))
			e.succeeded(id)
			if got := e.eventField("warm", "job.succeeded", "image_digest"); got != d1 {
				t.Fatalf("pull job's event: image_digest %q, want %q", got, d1)
			}
			if _, err := e.eng.EnsureImage(t.Context(), v1); err != nil {
				t.Fatal(err)
			}

			g := "pulled-" + mode // container names are the daemon's: one per parallel test
			e.succeeded(e.insert(g, "start", startPayload(v1)))
			if rec := e.record(g); rec.CurrentImageDigest != d1 || rec.CurrentImageRef != v1 {
				t.Fatalf("record after start: image %s digest %q, want %s %q", rec.CurrentImageRef, rec.CurrentImageDigest, v1, d1)
			}
			if got := e.eventField(g, "runtime.running", "image_digest"); got != d1 {
				t.Fatalf("runtime.running image_digest %q, want %q", got, d1)
			}

			e.succeeded(e.insert(g, "change_image", fmt.Sprintf(`{"image_ref": %q}`, v2)))
			if rec := e.record(g); rec.CurrentImageDigest != d2 || rec.CurrentImageRef != v2 {
				t.Fatalf("record after change_image: image %s digest %q, want %s %q", rec.CurrentImageRef, rec.CurrentImageDigest, v2, d2)
			}
			if got := e.eventField(g, "job.succeeded", "image_digest"); got != d2 {
				t.Fatalf("change_image job's event: image_digest %q, want %q", got, d2)
			}
			// The old container goes after the commit.
			wait.For(t, time.Minute, "one container, of the new image", func() bool {
				cs := e.containers(g)
				return len(cs) == 1 && cs[0].Image == v2 && cs[0].Running
			})

			// A tag the registry does not have: failed on the first attempt.
			missing := e.finished(e.insert("missing", "start", startPayload(r.Ref("galaxy/engine:nope"))))
			if missing.Status != job.StatusFailed || missing.Attempt != 1 || !strings.Contains(missing.LastError, "not found") {
				t.Fatalf("start of a missing tag: %s after %d attempts: %s", missing.Status, missing.Attempt, missing.LastError)
			}
			if len(e.containers("missing")) != 0 {
				t.Fatal("a container was created for a missing image")
			}
		})
	}
}

// Without credentials (or with wrong ones) a registry with auth refuses
// the pull: the job fails at once, saying so.
func TestUnauthorizedPullFailsAtOnce(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{Auth: true})
	v1, _, _, _ := registryImages(t, r)
	for name, cfg := range map[string]string{
		"none":  `{}`,
		"wrong": basicAuths(r.Host, r.User, "wrong-"+r.Password),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, engine.Options{DockerConfigDir: configDir(t, cfg)})
			e.policy.AllowedImages = append(e.policy.AllowedImages, r.Host+"/galaxy/*")
			e.run()
			j := e.finished(e.insert("locked", "pull", fmt.Sprintf(`{"image_ref": %q}`, v1)))
			if j.Status != job.StatusFailed || j.Attempt != 1 || !strings.Contains(j.LastError, "registry refused the credentials") {
				t.Fatalf("pull without valid credentials: %s after %d attempts: %s", j.Status, j.Attempt, j.LastError)
			}
		})
	}
}

// Jobs pull through a credential helper of the test's own, on PATH; the
// credentials then appear in no log line, span, event or job error, on
// success and on failure. Not parallel: PATH and the global tracer
// provider.
func TestCredentialHelperPullLeaksNothing(t *testing.T) {
	tp, spans := tracing()

	r := registry.Start(t, registry.Options{Auth: true})
	v1, d1, v2, _ := registryImages(t, r)
	helper := registry.InstallCredentialHelper(t, "rtmtest", r.Host, r.User, r.Password)
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var stops []func()
	run := func(cfg string) *env {
		e := newEnvWith(t, engine.Options{DockerConfigDir: configDir(t, cfg)})
		e.policy.AllowedImages = append(e.policy.AllowedImages, r.Host+"/galaxy/*")
		exec := executor.New(e.eng, executor.Config{Records: e.store, StateRoot: e.root, Logger: log})
		cfgW := e.workerConfig("owner-" + e.hostID)
		cfgW.Logger = log
		w := worker.New(e.store, exec, cfgW)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done }) }
		stops = append(stops, stop)
		t.Cleanup(stop)
		return e
	}

	// Through the helper: the pull and a start succeed.
	ok := run(`{"credHelpers": {"` + r.Host + `": "rtmtest"}}`)
	ok.succeeded(ok.insert("helped", "pull", fmt.Sprintf(`{"image_ref": %q}`, v1)))
	ok.succeeded(ok.insert("helped", "start", startPayload(v1)))
	if rec := ok.record("helped"); rec.CurrentImageDigest != d1 {
		t.Fatalf("record digest %q, want %q", rec.CurrentImageDigest, d1)
	}
	if !strings.Contains(helper.CallLog(), "get "+r.Host) {
		t.Fatalf("the credential helper was not asked: %q", helper.CallLog())
	}
	// With a wrong password in config.json: the job fails, the error
	// says why, and shows no password either.
	wrong := "wrong-" + r.Password
	bad := run(basicAuths(r.Host, r.User, wrong))
	if j := bad.finished(bad.insert("refused", "pull", fmt.Sprintf(`{"image_ref": %q}`, v2))); j.Status != job.StatusFailed || !strings.Contains(j.LastError, "refused") {
		t.Fatalf("pull with a wrong password: %s: %s", j.Status, j.LastError)
	}
	// The workers log a job's outcome after its commit: stop them, so
	// every line they write is in the logs searched below.
	for _, stop := range stops {
		stop()
	}
	_ = tp.ForceFlush(context.Background())

	secrets := map[string]string{
		"password":              r.Password,
		"wrong password":        wrong,
		"basic auth":            base64.StdEncoding.EncodeToString([]byte(r.User + ":" + r.Password)),
		"wrong basic auth":      base64.StdEncoding.EncodeToString([]byte(r.User + ":" + wrong)),
		"X-Registry-Auth field": `"password":"`,
	}
	var haystacks []string
	for _, e := range []*env{ok, bad} {
		rows, err := e.store.Pool().Query(context.Background(),
			`SELECT payload::text FROM outbox UNION ALL SELECT coalesce(last_error, '') || payload::text FROM jobs`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			haystacks = append(haystacks, "database: "+s)
		}
		rows.Close()
	}
	haystacks = append(haystacks, "logs: "+logs.String())
	var sawPullSpan bool
	for _, s := range spans.GetSpans() {
		text := fmt.Sprintf("span %s %v %v %v %v", s.Name, s.Attributes, s.Events, s.Status, s.Links)
		haystacks = append(haystacks, text)
		for _, kv := range s.Attributes {
			if kv.Key == "rtmanager.image.pull.bytes" {
				sawPullSpan = true
			}
		}
	}
	if !sawPullSpan {
		t.Fatal("no job span carries the pull's bytes")
	}
	for _, h := range haystacks {
		for what, secret := range secrets {
			if strings.Contains(h, secret) {
				t.Fatalf("the %s appears in %.300s", what, h)
			}
		}
	}
	if !strings.Contains(logs.String(), "job succeeded") || len(spans.GetSpans()) == 0 {
		t.Fatal("nothing was logged or traced: the test looked at nothing")
	}
}

// lockedBuffer is a buffer a test reads while others write it.
type lockedBuffer = syncbuf.Buffer
