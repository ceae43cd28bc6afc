// Package pgcluster starts a throwaway local PostgreSQL server from the
// installed binaries. The tests use it when no database URL is given, and
// `rtmanager dev` uses it as the embedded default database.
//
// The server listens on a Unix socket only (no TCP port to collide with),
// runs as an unprivileged user when the caller is root (PostgreSQL refuses
// to run as root), and is stopped when the process that started it exits.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries reports that no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install them (Debian: apt-get install postgresql) or set RTM_PG_BIN_DIR")

// Options configures a cluster.
type Options struct {
	// BinDir holds initdb and postgres. Empty: $RTM_PG_BIN_DIR, then PATH,
	// then the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// DataDir holds the cluster. Empty: a temporary directory removed by
	// Stop. A DataDir that already holds a cluster is reused.
	DataDir string
	// RunAsUser is the account the server runs as when the caller is root.
	// Empty: "nobody".
	RunAsUser string
	// Settings are passed as -c name=value, e.g. fsync=off for tests.
	Settings map[string]string
	// Log receives the server's output. Nil: discarded.
	Log io.Writer
	// StartTimeout bounds initdb plus start-up. Zero: 60 s.
	StartTimeout time.Duration
}

// Cluster is a running server.
type Cluster struct {
	DataDir   string
	SocketDir string
	User      string

	temporary bool
	cmd       *exec.Cmd
	exited    chan error
}

// FindBinDir locates a directory holding initdb and postgres.
func FindBinDir() (string, error) {
	if dir := os.Getenv("RTM_PG_BIN_DIR"); dir != "" {
		if hasServerBinaries(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("RTM_PG_BIN_DIR=%s does not hold initdb and postgres: %w", dir, ErrNoBinaries)
	}
	if path, err := exec.LookPath("initdb"); err == nil && hasServerBinaries(filepath.Dir(path)) {
		return filepath.Dir(path), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if info, err := os.Stat(filepath.Join(dir, name)); err != nil || info.IsDir() {
			return false
		}
	}
	return true
}

// Start initialises (when needed) and starts a cluster, and waits until it
// accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cred, err := credentialFor(opts.RunAsUser)
	if err != nil {
		return nil, err
	}
	c := &Cluster{DataDir: opts.DataDir, User: "postgres", exited: make(chan error, 1)}
	if c.DataDir == "" {
		dir, err := os.MkdirTemp("", "rtm-pg-")
		if err != nil {
			return nil, fmt.Errorf("create temporary data directory: %w", err)
		}
		c.DataDir, c.temporary = dir, true
	} else if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", c.DataDir, err)
	}
	c.SocketDir = c.DataDir
	if cred != nil {
		if err := chownTree(c.DataDir, int(cred.Uid), int(cred.Gid)); err != nil {
			c.cleanup()
			return nil, err
		}
	}

	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err != nil {
		initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
			"-D", c.DataDir, "-U", c.User, "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync")
		initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := initdb.CombinedOutput()
		if err != nil {
			c.cleanup()
			return nil, fmt.Errorf("initdb in %s: %w: %s", c.DataDir, err, lastLines(out, 5))
		}
	}

	args := []string{"-D", c.DataDir, "-k", c.SocketDir, "-c", "listen_addresses="}
	names := make([]string, 0, len(opts.Settings))
	for name := range opts.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-c", name+"="+opts.Settings[name])
	}
	if err := c.start(filepath.Join(binDir, "postgres"), args, cred, logw); err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// start runs the postmaster from a goroutine locked to its OS thread for the
// server's whole life: Pdeathsig fires when the thread that forked exits, so
// the thread must outlive the server, and then a test binary that dies
// without cleaning up still takes its server with it.
func (c *Cluster) start(bin string, args []string, cred *syscall.Credential, logw io.Writer) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logw, logw
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start postgres: %w", err)
			return
		}
		c.cmd = cmd
		started <- nil
		c.exited <- cmd.Wait()
	}()
	return <-started
}

func (c *Cluster) waitReady(ctx context.Context) error {
	var lastErr error
	for {
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Errorf("postgres exited during start-up (%v); its log says why", err)
		default:
		}
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections in time: %w", lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL returns a connection URL for database on this cluster.
func (c *Cluster) URL(database string) string {
	q := url.Values{"host": {c.SocketDir}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(c.User), Path: "/" + database, RawQuery: q.Encode()}).String()
}

// Stop shuts the server down (fast shutdown) and removes a temporary data
// directory. Stopping a stopped cluster returns at once.
func (c *Cluster) Stop() error {
	defer c.cleanup()
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	// The exit status goes back into the channel (as in waitReady): a
	// second Stop must find it, not wait forever for a second one.
	select {
	case err := <-c.exited:
		c.exited <- err
		return nil
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		c.exited <- <-c.exited
		return errors.New("postgres did not shut down within 30 s and was killed")
	}
}

func (c *Cluster) cleanup() {
	if c.temporary {
		_ = os.RemoveAll(c.DataDir)
	}
}

// credentialFor returns the account to run as when the caller is root, nil
// otherwise.
func credentialFor(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and user %q to run it as was not found: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("hand %s to the PostgreSQL user: %w", path, err)
		}
		return nil
	})
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
