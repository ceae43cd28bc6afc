package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/go-connections/sockets"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

// Options configures [New].
type Options struct {
	// Host is the daemon address ("unix:///var/run/docker.sock",
	// "tcp://…"). Empty means DOCKER_HOST, or the default socket.
	Host string
	// HostID is this agent's host id; it scopes every container operation.
	HostID string
	// APIVersion pins the API version. Empty (recommended) negotiates it
	// with the daemon on first use, which is what lets this client (API up
	// to 1.56) talk to Docker 20.10 (API 1.41).
	APIVersion string
	// CallTimeout bounds each short request (inspect, create, start, …); a
	// stop or restart gets CallTimeout plus its stop timeout. Image pulls
	// and the events stream are never bounded by it. 0 means no bound other
	// than the caller's context.
	CallTimeout time.Duration
	// WrapTransport, if set, wraps the HTTP transport (e.g. with extra
	// instrumentation). Only plain unix:// and tcp:// hosts are supported
	// with it (no DOCKER_CERT_PATH TLS).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// TracerProvider is used for the client's built-in OpenTelemetry HTTP
	// spans; nil means the global provider.
	TracerProvider trace.TracerProvider
	// DockerConfigDir is where config.json with registry credentials is
	// read from; empty means $DOCKER_CONFIG or ~/.docker.
	DockerConfigDir string
	// PullTimeout bounds one image pull, its retries included (default
	// DefaultPullTimeout).
	PullTimeout time.Duration
	// PullAttempts is how many times a pull is tried while the registry
	// is unreachable or failing (default DefaultPullAttempts); an image
	// that does not exist or is refused is not tried again.
	PullAttempts int
	// PullBackoff is the first wait between pull attempts (default 1s);
	// it doubles, up to eight times this.
	PullBackoff time.Duration
}

// Docker implements [Engine] with the Docker Engine API.
//
// The HTTP client has no request timeout: a client timeout would cut the
// long-lived events stream off. Deadlines come from contexts (and
// Options.CallTimeout).
type Docker struct {
	cli         *client.Client
	hostID      string
	callTimeout time.Duration
	configDir   string
	netMu       sync.Mutex      // serialises EnsureNetwork within this process
	netKnown    map[string]bool // networks EnsureNetwork made sure of (netMu)

	// images EnsureImage found present, by reference (see imageCache).
	images imageCache
	// ids of the containers this engine created: ours without an inspect.
	createdMu  sync.Mutex
	createdIDs map[string]struct{}

	pulls        singleflight.Group // one pull per reference at a time
	pullTimeout  time.Duration
	pullAttempts int
	pullBackoff  time.Duration
	pullRequests atomic.Int64 // pull requests sent, for tests
	// Test hooks: joined runs once a caller waits for a pull (shared or
	// its own); pulling runs at the start of a pull.
	testHookJoined, testHookPulling func()
}

// New connects lazily to the daemon described by opts; call Ping to check it.
func New(opts Options) (*Docker, error) {
	if opts.HostID == "" {
		return nil, errors.New("docker engine: empty host id")
	}
	copts := []client.Opt{client.FromEnv}
	if opts.Host != "" {
		copts = append(copts, client.WithHost(opts.Host))
	}
	if opts.APIVersion != "" {
		copts = append(copts, client.WithAPIVersion(opts.APIVersion))
	}
	if opts.TracerProvider != nil {
		copts = append(copts, client.WithTraceProvider(opts.TracerProvider))
	}
	if opts.WrapTransport != nil {
		hc, err := wrappedHTTPClient(opts.Host, opts.WrapTransport)
		if err != nil {
			return nil, fmt.Errorf("docker engine: %w", err)
		}
		copts = append(copts, client.WithHTTPClient(hc))
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker engine: new client: %w", err)
	}
	return &Docker{
		cli:          cli,
		hostID:       opts.HostID,
		callTimeout:  opts.CallTimeout,
		configDir:    opts.DockerConfigDir,
		pullTimeout:  cmp.Or(max(opts.PullTimeout, 0), DefaultPullTimeout),
		pullAttempts: cmp.Or(max(opts.PullAttempts, 0), DefaultPullAttempts),
		pullBackoff:  cmp.Or(max(opts.PullBackoff, 0), time.Second),
	}, nil
}

// wrappedHTTPClient builds the transport the moby client would build for
// host, wrapped by wrap.
func wrappedHTTPClient(host string, wrap func(http.RoundTripper) http.RoundTripper) (*http.Client, error) {
	if os.Getenv(client.EnvOverrideCertPath) != "" {
		return nil, errors.New("WrapTransport does not support TLS from " + client.EnvOverrideCertPath)
	}
	if host == "" {
		host = cmp.Or(os.Getenv(client.EnvOverrideHost), client.DefaultDockerHost)
	}
	u, err := client.ParseHostURL(host)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{MaxIdleConns: 6, IdleConnTimeout: 30 * time.Second}
	if err := sockets.ConfigureTransport(tr, u.Scheme, u.Host); err != nil {
		return nil, err
	}
	return &http.Client{Transport: wrap(tr), CheckRedirect: client.CheckRedirect}, nil
}

// HostID returns the host id this engine acts for.
func (d *Docker) HostID() string { return d.hostID }

// Close releases idle connections.
func (d *Docker) Close() error { return d.cli.Close() }

func (d *Docker) callCtx(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	if d.callTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d.callTimeout+extra)
}

// mapErr wraps err with ErrNotFound when the daemon said "no such …".
func mapErr(err error) error {
	if err != nil && cerrdefs.IsNotFound(err) && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// Ping implements Engine.
func (d *Docker) Ping(ctx context.Context) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	if _, err := d.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("ping docker daemon at %s: %w", d.cli.DaemonHost(), err)
	}
	return nil
}

// APIVersion returns the API version in use (negotiated after the first
// call).
func (d *Docker) APIVersion() string { return d.cli.ClientVersion() }
