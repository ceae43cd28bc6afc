// The demo's agent: `rtmanager dev` in the background on a data directory
// of its own, and its cleanup.

package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/internal/engineimage"
)

// startDev starts `rtmanager dev` in the background on a data directory
// of its own and waits until it is ready.
func (d *demo) startDev(ctx context.Context) error {
	base := os.TempDir()
	if os.Geteuid() == 0 && !traversableByAll(base) {
		base = "/tmp" // PostgreSQL runs as nobody, who must reach the data dir
	}
	dir, err := os.MkdirTemp(base, "rtmanager-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	// As root, PostgreSQL runs as nobody, who must be able to reach its
	// data directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	d.devOut, d.devLog = filepath.Join(dir, "dev.out"), filepath.Join(dir, "agent.log")
	out, err := os.Create(d.devOut)
	if err != nil {
		return err
	}
	defer out.Close()
	logf, err := os.Create(d.devLog)
	if err != nil {
		return err
	}
	defer logf.Close()

	args := []string{"dev", "--data-dir", filepath.Join(dir, "dev"), "--reset", "--host-id", d.hostID, "--http-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0"}
	d.heading("Start the agent on a throwaway database")
	fmt.Fprintf(d.w, "$ rtmanager %s &   (log: %s)\n", strings.Join(args, " "), d.devLog)
	cmd := exec.Command(d.self, args...)
	cmd.Env = demoDevEnv()
	cmd.Stdout, cmd.Stderr = out, logf
	// If the demo dies without cleaning up, the agent gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rtmanager dev: %w", err)
	}
	d.dev, d.devDone = cmd, make(chan struct{})
	go func() {
		d.devErr = cmd.Wait()
		close(d.devDone)
	}()

	deadline := time.Now().Add(d.startTimeout)
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	var banner map[string]string
	for {
		b, _ := os.ReadFile(d.devOut)
		if bytes.Contains(b, []byte("Watch what happened:")) {
			banner = parseBanner(string(b))
			d.url, d.httpAddr, d.image = banner["database"], strings.TrimPrefix(banner["http"], "http://"), banner["engine image"]
			d.consoleURL = banner["console"]
			if d.ready(ctx) {
				break
			}
		}
		select {
		case <-d.devDone:
			return fmt.Errorf("rtmanager dev exited before it was ready (%v); the end of its log:\n%s", d.devErr, tailFile(d.devLog, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rtmanager dev was not ready within %s; the end of its log:\n%s", d.startTimeout, tailFile(d.devLog, 15))
		}
	}
	if d.url == "" || d.image == "" || !strings.HasPrefix(d.image, engineimage.DefaultRepo+":") {
		return fmt.Errorf("rtmanager dev's banner lacks the database or the engine image:\n%s", tailFile(d.devOut, 30))
	}
	fmt.Fprintf(d.w, "agent ready after %s: http://%s/readyz answers 200\n", time.Since(d.startedPlaying).Round(100*time.Millisecond), d.httpAddr)
	fmt.Fprintf(d.w, "  database     %s\n  engine image %s\n", d.url, d.image)
	if strings.HasPrefix(d.consoleURL, "http") {
		fmt.Fprintf(d.w, "  console      %s   (open it to watch the demo live)\n", d.consoleURL)
	}
	fmt.Fprintf(d.w, "\nThe operator commands below read the same database:\n$ export RTM_DATABASE_URL='%s'\n", d.url)
	if err := d.show(ctx, "hosts", "list"); err != nil {
		return err
	}
	// A second tag of the demo engine, so that a game can change image
	// without a registry. dev allows the whole rtmanager-engine repository.
	d.image2 = engineimage.DefaultRepo + ":v2-" + d.run
	if err := d.docker(ctx, "tag", d.image, d.image2); err != nil {
		return err
	}
	d.image2Tagged = true
	return nil
}

// ready reports whether the agent's /readyz answers 200 (the agent's own
// health endpoint on loopback, not a container's address).
func (d *demo) ready(ctx context.Context) bool {
	if d.httpAddr == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.httpAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cleanup stops the agent and removes the demo's containers, the second
// image tag and the temporary directory.
func (d *demo) cleanup() error {
	if d.dir == "" {
		return nil
	}
	fmt.Fprintln(d.w)
	fmt.Fprintln(d.w, "Cleaning up")
	var errs []error
	if d.dev != nil {
		select {
		case <-d.devDone:
			fmt.Fprintf(d.w, "  the agent had already exited (%v)\n", d.devErr)
		default:
			_ = d.dev.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.devDone:
				fmt.Fprintln(d.w, "  agent stopped (SIGTERM)")
			case <-time.After(45 * time.Second):
				_ = d.dev.Process.Kill()
				<-d.devDone
				errs = append(errs, fmt.Errorf("the agent did not stop within 45s of SIGTERM; killed it"))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--filter", "label="+engine.LabelHost+"="+d.hostID).Output()
	if err != nil {
		errs = append(errs, fmt.Errorf("list the demo's containers: %w", err))
	} else if ids := strings.Fields(string(out)); len(ids) > 0 {
		if out, err := exec.CommandContext(ctx, "docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("remove the demo's containers: %s", oneLineOf(out, err)))
		} else {
			fmt.Fprintf(d.w, "  removed %d container(s) of host %s\n", len(ids), d.hostID)
		}
	}
	if d.image2Tagged {
		if out, err := exec.CommandContext(ctx, "docker", "rmi", d.image2).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("untag %s: %s", d.image2, oneLineOf(out, err)))
		}
	}
	if d.keep {
		fmt.Fprintf(d.w, "  kept %s (agent log: %s)\n", d.dir, d.devLog)
	} else if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(d.w, "  removed %s\n", d.dir)
	}
	return errors.Join(errs...)
}

func parseBanner(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		for _, key := range []string{"database", "http", "console", "engine image", "host id"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), key+" "); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					m[key] = f[0]
				}
			}
		}
	}
	return m
}

// demoDevEnv is the environment of the demo's agent and commands: this
// one without the RTM_* settings that would point the agent elsewhere.
func demoDevEnv() []string {
	keep := map[string]bool{"RTM_PG_BIN_DIR": true, "RTM_DOCKER_HOST": true, "RTM_LOG_LEVEL": true, "RTM_LOG_FORMAT": true}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "RTM_") && !keep[name] {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// traversableByAll reports whether every directory from / down to dir
// lets other users through.
func traversableByAll(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
