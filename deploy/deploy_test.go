// Package deploy holds the deployment files; its tests check that they
// work: the systemd unit passes systemd-analyze verify, and the container
// image builds from scratch and runs the agent against the test dockerd and
// PostgreSQL.
package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/testutil/agentbin"
	"github.com/galaxy/rtmanager/internal/testutil/dockertest"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing; CI installs the systemd package")
		}
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := agentbin.Build(t)
	unit, err := os.ReadFile("systemd/rtmanager.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart exists: point it at the binary just built.
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/rtmanager", bin)
	path := filepath.Join(dir, "rtmanager.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestContainerImageRunsTheAgent builds the image of deploy/container from
// scratch (nothing is pulled), runs the agent in it with the Docker socket
// and the database socket mounted, waits for it to register its host, and
// stops it: it must drain and exit 0.
func TestContainerImageRunsTheAgent(t *testing.T) {
	cli := dockertest.Client(t)
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	parsed, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	socketDir := parsed.Query().Get("host")
	if !strings.HasPrefix(socketDir, "/") {
		t.Skip("the test database is not on a Unix socket (RTM_TEST_DATABASE_URL); the container cannot reach it")
	}
	// The daemon the test talks to (DOCKER_HOST), mounted where the agent
	// in the container looks by default.
	dockerSocket, ok := strings.CutPrefix(cli.DaemonHost(), "unix://")
	if !ok {
		t.Skipf("the Docker daemon (%s) is not on a Unix socket; the container cannot reach it", cli.DaemonHost())
	}

	bin := agentbin.Build(t)
	dockerfile, err := os.ReadFile("container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	image := "rtmanager-test-agent:" + dockertest.UniqueName(t)
	buildCtx := tarOf(t, map[string][]byte{"Dockerfile": dockerfile, "rtmanager": mustRead(t, bin)})
	res, err := cli.ImageBuild(ctx, buildCtx, client.ImageBuildOptions{Tags: []string{image}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatalf("build the agent image: %v", err)
	}
	buildLog, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if bytes.Contains(buildLog, []byte(`"error"`)) {
		t.Fatalf("build the agent image:\n%s", buildLog)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), image, client.ImageRemoveOptions{Force: true}) })

	hostID := dockertest.UniqueName(t)
	stateRoot := t.TempDir()
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: hostID,
		Config: &container.Config{
			Image: image,
			Env: []string{
				"RTM_DATABASE_URL=" + dbURL,
				"RTM_HOST_ID=" + hostID,
				"RTM_STATE_ROOT=" + stateRoot,
				"RTM_DOCKER_NETWORK=" + hostID,
				"RTM_HTTP_ADDR=",
			},
		},
		HostConfig: &container.HostConfig{Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: dockerSocket, Target: "/var/run/docker.sock"},
			{Type: mount.TypeBind, Source: socketDir, Target: socketDir},
			{Type: mount.TypeBind, Source: stateRoot, Target: stateRoot},
		}},
	})
	if err != nil {
		t.Fatalf("create the agent container: %v", err)
	}
	t.Cleanup(func() {
		_, _ = cli.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start the agent container: %v", err)
	}

	pool, err := db.Connect(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	wait.For(t, time.Minute, "the containerised agent to register its host", func() bool {
		if _, err := store.GetHost(ctx, hostID); err == nil {
			return true
		}
		ins, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
		if err == nil && ins.Container.State != nil && !ins.Container.State.Running {
			t.Fatalf("the agent container exited (%d): %s", ins.Container.State.ExitCode, logsOf(ctx, cli, created.ID))
		}
		return false
	})

	timeout := 60
	if _, err := cli.ContainerStop(ctx, created.ID, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code := ins.Container.State.ExitCode; code != 0 {
		t.Fatalf("the agent exited %d on SIGTERM, want 0 after draining; logs:\n%s", code, logsOf(ctx, cli, created.ID))
	}
	if logs := logsOf(ctx, cli, created.ID); !strings.Contains(logs, `"msg":"agent stopped"`) {
		t.Fatalf("the agent did not log a clean stop:\n%s", logs)
	}
}

func logsOf(ctx context.Context, cli *client.Client, id string) string {
	res, err := cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer res.Close()
	b, _ := io.ReadAll(res)
	return string(b)
}

func tarOf(t *testing.T, files map[string][]byte) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
