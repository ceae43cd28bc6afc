// Package engine is rtmanager's boundary to the Docker daemon.
//
// This file holds every call the program makes to the Docker SDK
// (github.com/moby/moby/client); nothing else imports moby. The rest of the
// agent depends on the small [Engine] interface so that unit tests can fake
// Docker, while [Docker] implements it against a real daemon.
//
// Rules enforced here, whatever the caller asks:
//
//   - Every container the agent creates carries [LabelManaged]="true",
//     [LabelHost], [LabelGame] and [LabelJob]. Every mutating call first
//     inspects its target and refuses ([ErrNotManaged]) a container that does
//     not carry LabelManaged="true" and this engine's host id. Mutations are
//     then addressed by the inspected container id, never by name.
//   - Engine containers run unprivileged (see [Docker.CreateContainer]).
//   - Operations are idempotent so that at-least-once job delivery is safe:
//     creating an existing container of ours adopts it, starting a running
//     container, stopping a stopped one and removing a gone one all succeed.
//   - Errors say what was being done and map "no such object" to
//     [ErrNotFound].
package engine

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/go-connections/sockets"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"go.opentelemetry.io/otel/trace"
)

// Label keys put on every container (and network) the agent creates.
const (
	// LabelManaged marks an object as created by rtmanager; its value is
	// always "true".
	LabelManaged = "com.galaxy.rtmanager.managed"
	// LabelHost holds the id of the host (agent) that owns the object.
	LabelHost = "com.galaxy.rtmanager.host"
	// LabelGame holds the game id of an engine container.
	LabelGame = "com.galaxy.rtmanager.game"
	// LabelJob holds the id (decimal) of the job that created the container.
	LabelJob = "com.galaxy.rtmanager.job"

	// labelPrefix is reserved: ContainerSpec.Labels may not use it.
	labelPrefix = "com.galaxy.rtmanager."
)

// DefaultStateMountTarget is where the state directory is mounted inside an
// engine container when ContainerSpec.StateMountTarget is empty.
const DefaultStateMountTarget = "/state"

// Sentinel errors. Errors returned by this package wrap them; test with
// errors.Is.
var (
	// ErrNotFound: the container, image or network does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotManaged: the container exists but does not carry rtmanager's
	// labels for this host. The agent never touches such a container.
	ErrNotManaged = errors.New("container is not managed by this rtmanager host")
	// ErrNameConflict: a container of ours with the requested name exists
	// but belongs to another game.
	ErrNameConflict = errors.New("container name is taken by another game")
	// ErrStreamEnded: the Docker events stream ended (EOF: the daemon
	// stopped or restarted, or a proxy closed the connection). Events may
	// have been missed; the caller must relist.
	ErrStreamEnded = errors.New("docker events stream ended")
	// ErrInvalidSpec: a ContainerSpec failed the checks done here.
	ErrInvalidSpec = errors.New("invalid container spec")
)

// Engine is the part of Docker the rest of rtmanager depends on. All
// container methods act only on containers labelled as managed by this
// engine's host.
type Engine interface {
	// Ping checks that the daemon answers (and negotiates the API version).
	Ping(ctx context.Context) error
	// EnsureNetwork creates the named bridge network if it is missing.
	EnsureNetwork(ctx context.Context, name string) error
	// EnsureImage pulls ref unless the daemon already has it.
	EnsureImage(ctx context.Context, ref string) error
	// CreateContainer creates a container, or adopts our existing one with
	// the same name, host and game.
	CreateContainer(ctx context.Context, spec ContainerSpec) (Container, error)
	// StartContainer starts a container; an already running one is fine.
	StartContainer(ctx context.Context, id string) error
	// StopContainer sends SIGTERM, then SIGKILL after timeout; a stopped
	// container is fine.
	StopContainer(ctx context.Context, id string, timeout time.Duration) error
	// RestartContainer stops (as StopContainer) and starts a container.
	RestartContainer(ctx context.Context, id string, timeout time.Duration) error
	// RemoveContainer force-removes a container; a missing one is fine.
	RemoveContainer(ctx context.Context, id string) error
	// InspectContainer returns one of our containers by id or name.
	InspectContainer(ctx context.Context, idOrName string) (Container, error)
	// ListManaged returns all our containers on this host, in any state.
	ListManaged(ctx context.Context) ([]Container, error)
	// Events streams our containers' events to handle until ctx ends or
	// the stream breaks. See [Docker.Events].
	Events(ctx context.Context, opts EventsOptions, handle func(Event)) error
}

var _ Engine = (*Docker)(nil)

// Container is what the agent knows about one Docker container.
type Container struct {
	ID      string
	Name    string // without the leading "/"
	Image   string // image reference as given at creation
	ImageID string // resolved image id (sha256:…)
	Labels  map[string]string

	State     string // created, running, paused, restarting, removing, exited, dead
	Running   bool
	ExitCode  int
	OOMKilled bool // as reported by the daemon; unreliable on cgroup v2

	StartedAt  time.Time // zero if never started
	FinishedAt time.Time // zero if never exited
	CreatedAt  time.Time

	// From the labels.
	GameID string
	HostID string
	JobID  int64
}

// ContainerSpec describes an engine container to create.
type ContainerSpec struct {
	GameID string
	// HostID must be empty (filled with the engine's host id) or equal to
	// the engine's host id: an engine only creates containers for itself.
	HostID string
	JobID  int64
	Name   string
	Image  string
	Env    []string // KEY=value

	// StatePath is the host directory bind-mounted into the container. It
	// must be absolute, clean and already exist (the daemon does not create
	// it; the caller validates it against its configured root).
	StatePath        string
	StateMountTarget string // default DefaultStateMountTarget

	// Network is the user-defined network to attach the container to; the
	// container name (and NetworkAliases) become DNS aliases on it. Empty
	// means the daemon's default bridge (no aliases).
	Network        string
	NetworkAliases []string

	MemoryBytes int64 // 0 = unlimited; swap is limited to the same value
	NanoCPUs    int64 // 0 = unlimited; 1e9 = one CPU
	PidsLimit   int64 // 0 = unlimited

	// Labels are extra labels (e.g. for tests). Keys under
	// "com.galaxy.rtmanager." are reserved and refused.
	Labels map[string]string
}

// Event is one Docker container event.
type Event struct {
	ID         string // container id
	Action     string // start, die, oom, destroy, …
	Attributes map[string]string
	TimeNano   int64 // daemon clock, nanoseconds since the Unix epoch
}

// GameID returns the game label carried by the event.
func (e Event) GameID() string { return e.Attributes[LabelGame] }

// ExitCode returns the exitCode attribute of a die event.
func (e Event) ExitCode() (int, bool) {
	s, ok := e.Attributes["exitCode"]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// EventsOptions selects the events to stream.
type EventsOptions struct {
	// SinceNano replays events from the daemon's ring buffer starting at
	// this daemon time (inclusive, so replays contain duplicates). 0 streams
	// only new events.
	SinceNano int64
	// UntilNano ends the stream at this daemon time; 0 means never.
	UntilNano int64
	// Actions to receive; nil means DefaultEventActions().
	Actions []string
}

// DefaultEventActions returns the container actions the agent maps onto
// record transitions.
func DefaultEventActions() []string {
	return []string{"start", "die", "oom", "destroy"}
}

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
	netMu       sync.Mutex // serialises EnsureNetwork within this process
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
		cli:         cli,
		hostID:      opts.HostID,
		callTimeout: opts.CallTimeout,
		configDir:   opts.DockerConfigDir,
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

// ---------------------------------------------------------------------------
// Networks

// EnsureNetwork implements Engine. A missing network is created as a bridge
// labelled managed and with this host id; an existing network of that name
// is used as it is (an operator may pre-create it).
//
// Docker before API 1.44 lets two networks share a name (the create only
// warns), and the client cannot ask for the old CheckDuplicate flag. One
// agent serialises its own calls, but agents of other host ids on the same
// daemon can create at the same moment. So every call lists the networks
// of that exact name, and when there are several, all parties converge on
// the oldest: the others that carry our managed label are removed when
// nothing is attached to them. Two creators that each list before the
// other's create is visible may both return with a duplicate standing; the
// next call on that daemon removes it.
func (d *Docker) EnsureNetwork(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("ensure network: empty name")
	}
	d.netMu.Lock()
	defer d.netMu.Unlock()
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()

	same, err := d.networksNamed(ctx, name)
	if err != nil {
		return err
	}
	if len(same) == 0 {
		_, err := d.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver: "bridge",
			Labels: map[string]string{LabelManaged: "true", LabelHost: d.hostID},
		})
		if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("create network %s: %w", name, err)
		}
		// A conflict: someone else won the race (API >= 1.44 refuses
		// duplicates). Either way, look at what stands now.
		if same, err = d.networksNamed(ctx, name); err != nil {
			return err
		}
	}
	if len(same) <= 1 {
		return nil
	}
	winner := slices.MinFunc(same, func(a, b namedNetwork) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, n := range same {
		if n.id == winner.id || !n.managed {
			continue
		}
		// Fails while containers are attached: left for a later call.
		_, _ = d.cli.NetworkRemove(ctx, n.id, client.NetworkRemoveOptions{})
	}
	return nil
}

type namedNetwork struct {
	id      string
	created time.Time
	managed bool
}

// networksNamed lists the networks whose name is exactly name.
func (d *Docker) networksNamed(ctx context.Context, name string) ([]namedNetwork, error) {
	list, err := d.cli.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("name", name),
	})
	if err != nil {
		return nil, fmt.Errorf("list networks named %s: %w", name, err)
	}
	var same []namedNetwork
	for _, n := range list.Items {
		if n.Name == name { // the filter matches substrings
			same = append(same, namedNetwork{n.ID, time.Time(n.Created), n.Labels[LabelManaged] == "true"})
		}
	}
	return same, nil
}

// ---------------------------------------------------------------------------
// Images

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

// ---------------------------------------------------------------------------
// Containers

// CreateContainer implements Engine.
//
// The container gets our labels, the state directory bind mount, the env,
// the network with the container name as DNS alias, and resource limits.
// Security settings, because the job that asks for it is untrusted input
// and the daemon socket is root on the host:
//
//   - not privileged, no host PID/IPC/network/UTS namespaces (private IPC is
//     set explicitly, the others are the daemon defaults);
//   - CapDrop ALL: a game engine serving HTTP on an unprivileged port and
//     writing its own state directory needs no capability;
//   - no-new-privileges: setuid binaries in the image cannot regain any;
//   - pids, memory (and the same swap) and CPU limits, so one game cannot
//     starve the host;
//   - restart policy "no": the agent, not the daemon, decides about
//     restarts, and daemon restarts would emit only die/start events;
//   - an init process (docker-init) as PID 1 forwards SIGTERM to the engine
//     and reaps zombies, so a graceful stop works even for engines that
//     do not handle signals as PID 1.
//
// If a container with spec.Name exists: it is returned (adopted) if it is
// ours for this host and spec.GameID — whatever its image; the caller
// compares Container.Image — ErrNameConflict if it is ours for another game,
// ErrNotManaged otherwise.
func (d *Docker) CreateContainer(ctx context.Context, spec ContainerSpec) (Container, error) {
	if err := d.checkSpec(&spec); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()

	labels := make(map[string]string, len(spec.Labels)+4)
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[LabelHost] = spec.HostID
	labels[LabelGame] = spec.GameID
	labels[LabelJob] = strconv.FormatInt(spec.JobID, 10)

	hc := &container.HostConfig{
		Mounts: []mount.Mount{{
			Type:   mount.TypeBind,
			Source: spec.StatePath,
			Target: spec.StateMountTarget,
		}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Privileged:    false,
		IpcMode:       "private",
		CapDrop:       []string{"ALL"},
		SecurityOpt:   []string{"no-new-privileges"},
		Init:          ptr(true),
		Resources: container.Resources{
			Memory:   spec.MemoryBytes,
			NanoCPUs: spec.NanoCPUs,
		},
	}
	if spec.MemoryBytes > 0 {
		hc.MemorySwap = spec.MemoryBytes
	}
	if spec.PidsLimit > 0 {
		hc.PidsLimit = ptr(spec.PidsLimit)
	}
	var nc *network.NetworkingConfig
	if spec.Network != "" {
		hc.NetworkMode = container.NetworkMode(spec.Network)
		aliases := append([]string{spec.Name}, spec.NetworkAliases...)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			spec.Network: {Aliases: slices.Compact(aliases)},
		}}
	}
	opts := client.ContainerCreateOptions{
		Name: spec.Name,
		Config: &container.Config{
			Image:  spec.Image,
			Env:    slices.Clone(spec.Env),
			Labels: labels,
		},
		HostConfig:       hc,
		NetworkingConfig: nc,
	}

	// A retry loop covers the race where the conflicting container is
	// removed between our create and our inspect.
	for attempt := 0; ; attempt++ {
		res, err := d.cli.ContainerCreate(ctx, opts)
		if err == nil {
			c, err := d.inspect(ctx, res.ID)
			if err != nil {
				return Container{}, fmt.Errorf("create container %s: inspect created %s: %w", spec.Name, res.ID, err)
			}
			return c, nil
		}
		if !cerrdefs.IsConflict(err) {
			return Container{}, fmt.Errorf("create container %s: %w", spec.Name, mapErr(err))
		}
		existing, ierr := d.inspect(ctx, spec.Name)
		if errors.Is(ierr, ErrNotFound) && attempt < 3 {
			continue
		}
		if ierr != nil {
			return Container{}, fmt.Errorf("create container %s: name taken (%v); inspect existing: %w", spec.Name, err, ierr)
		}
		if !d.owns(existing.Labels) {
			return Container{}, fmt.Errorf("create container %s: existing container %s: %w", spec.Name, shortID(existing.ID), ErrNotManaged)
		}
		if existing.GameID != spec.GameID {
			return Container{}, fmt.Errorf("create container %s: existing container %s is for game %q: %w",
				spec.Name, shortID(existing.ID), existing.GameID, ErrNameConflict)
		}
		return existing, nil
	}
}

func (d *Docker) checkSpec(spec *ContainerSpec) error {
	if spec.HostID == "" {
		spec.HostID = d.hostID
	}
	if spec.StateMountTarget == "" {
		spec.StateMountTarget = DefaultStateMountTarget
	}
	var problems []string
	if spec.HostID != d.hostID {
		problems = append(problems, fmt.Sprintf("host id %q is not this engine's %q", spec.HostID, d.hostID))
	}
	if spec.GameID == "" {
		problems = append(problems, "empty game id")
	}
	if spec.Name == "" {
		problems = append(problems, "empty name")
	}
	if spec.Image == "" {
		problems = append(problems, "empty image")
	}
	if spec.StatePath == "" || !filepath.IsAbs(spec.StatePath) || filepath.Clean(spec.StatePath) != spec.StatePath {
		problems = append(problems, fmt.Sprintf("state path %q is not a clean absolute path", spec.StatePath))
	}
	if !filepath.IsAbs(spec.StateMountTarget) || filepath.Clean(spec.StateMountTarget) != spec.StateMountTarget || spec.StateMountTarget == "/" {
		problems = append(problems, fmt.Sprintf("state mount target %q is not a clean absolute path", spec.StateMountTarget))
	}
	if spec.MemoryBytes < 0 || spec.NanoCPUs < 0 || spec.PidsLimit < 0 {
		problems = append(problems, "negative resource limit")
	}
	for k := range spec.Labels {
		if strings.HasPrefix(k, labelPrefix) {
			problems = append(problems, fmt.Sprintf("label %q uses the reserved prefix %q", k, labelPrefix))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(problems, "; "))
	}
	return nil
}

// owns reports whether labels mark a container as managed by this host.
func (d *Docker) owns(labels map[string]string) bool {
	return labels[LabelManaged] == "true" && labels[LabelHost] == d.hostID
}

// managed inspects idOrName and returns it if it is ours.
func (d *Docker) managed(ctx context.Context, idOrName string) (Container, error) {
	c, err := d.inspect(ctx, idOrName)
	if err != nil {
		return Container{}, err
	}
	if !d.owns(c.Labels) {
		return Container{}, ErrNotManaged
	}
	return c, nil
}

// StartContainer implements Engine.
func (d *Docker) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	c, err := d.managed(ctx, id)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	if c.Running {
		return nil
	}
	if _, err := d.cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", id, mapErr(err))
	}
	return nil
}

// StopContainer implements Engine. The daemon sends the stop signal
// (SIGTERM) and, after timeout (rounded up to whole seconds), SIGKILL.
func (d *Docker) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	secs := stopSeconds(timeout)
	ctx, cancel := d.callCtx(ctx, time.Duration(secs)*time.Second)
	defer cancel()
	c, err := d.managed(ctx, id)
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if _, err := d.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stop container %s: %w", id, mapErr(err))
	}
	return nil
}

// RestartContainer implements Engine (stop as StopContainer, then start).
func (d *Docker) RestartContainer(ctx context.Context, id string, timeout time.Duration) error {
	secs := stopSeconds(timeout)
	ctx, cancel := d.callCtx(ctx, time.Duration(secs)*time.Second)
	defer cancel()
	c, err := d.managed(ctx, id)
	if err != nil {
		return fmt.Errorf("restart container %s: %w", id, err)
	}
	if _, err := d.cli.ContainerRestart(ctx, c.ID, client.ContainerRestartOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("restart container %s: %w", id, mapErr(err))
	}
	return nil
}

// RenameContainer renames one of our containers. It is not part of
// [Engine], so that fakes of the interface need not grow: the executor's
// image change uses it, when available, to move the old container aside
// before it creates the new one under the game's name. Renaming a
// container to the name it already has is success.
func (d *Docker) RenameContainer(ctx context.Context, id, newName string) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	c, err := d.managed(ctx, id)
	if err != nil {
		return fmt.Errorf("rename container %s: %w", id, err)
	}
	if c.Name == newName {
		return nil
	}
	if _, err := d.cli.ContainerRename(ctx, c.ID, client.ContainerRenameOptions{NewName: newName}); err != nil {
		return fmt.Errorf("rename container %s to %s: %w", id, newName, mapErr(err))
	}
	return nil
}

func stopSeconds(timeout time.Duration) int {
	if timeout <= 0 {
		return 0
	}
	s := math.Ceil(timeout.Seconds())
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// RemoveContainer implements Engine: force removal (a running container is
// killed) including its anonymous volumes; the bind-mounted state directory
// stays. A container already gone, or already being removed, is success.
func (d *Docker) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	c, err := d.managed(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	_, err = d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		return nil
	default:
		return fmt.Errorf("remove container %s: %w", id, err)
	}
}

// InspectContainer implements Engine: ErrNotFound if there is no such
// container, ErrNotManaged if it is not ours.
func (d *Docker) InspectContainer(ctx context.Context, idOrName string) (Container, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	c, err := d.managed(ctx, idOrName)
	if err != nil {
		return Container{}, fmt.Errorf("inspect container %s: %w", idOrName, err)
	}
	return c, nil
}

// ListManaged implements Engine. The list is filtered by the daemon on our
// labels; each container is then inspected for its exit code and times (a
// container removed in between is left out). Sorted by name.
func (d *Docker) ListManaged(ctx context.Context) ([]Container, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: d.labelFilters(),
	})
	if err != nil {
		return nil, fmt.Errorf("list managed containers: %w", err)
	}
	out := make([]Container, 0, len(res.Items))
	for _, s := range res.Items {
		c, err := d.inspect(ctx, s.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list managed containers: %w", err)
		}
		if d.owns(c.Labels) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Container) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (d *Docker) labelFilters() client.Filters {
	return make(client.Filters).Add("label", LabelManaged+"=true", LabelHost+"="+d.hostID)
}

func (d *Docker) inspect(ctx context.Context, idOrName string) (Container, error) {
	if idOrName == "" {
		return Container{}, fmt.Errorf("empty container id: %w", ErrNotFound)
	}
	res, err := d.cli.ContainerInspect(ctx, idOrName, client.ContainerInspectOptions{})
	if err != nil {
		return Container{}, mapErr(err)
	}
	return fromInspect(res.Container), nil
}

func fromInspect(r container.InspectResponse) Container {
	c := Container{
		ID:        r.ID,
		Name:      strings.TrimPrefix(r.Name, "/"),
		ImageID:   r.Image,
		CreatedAt: parseTime(r.Created),
	}
	if r.Config != nil {
		c.Image = r.Config.Image
		c.Labels = maps0(r.Config.Labels)
	} else {
		c.Labels = map[string]string{}
	}
	if s := r.State; s != nil {
		c.State = string(s.Status)
		c.Running = s.Running
		c.ExitCode = s.ExitCode
		c.OOMKilled = s.OOMKilled
		c.StartedAt = parseTime(s.StartedAt)
		c.FinishedAt = parseTime(s.FinishedAt)
	}
	c.GameID = c.Labels[LabelGame]
	c.HostID = c.Labels[LabelHost]
	c.JobID, _ = strconv.ParseInt(c.Labels[LabelJob], 10, 64)
	return c
}

// parseTime parses the daemon's RFC 3339 times; "0001-01-01T00:00:00Z" and
// garbage give the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

// ---------------------------------------------------------------------------
// Events

// Events implements Engine. It subscribes to the daemon's events, filtered
// by the daemon to containers with our managed label and host id and to
// opts.Actions, and calls handle for each event, in stream order, on the
// calling goroutine.
//
// handle must return quickly — copy the event into a bounded buffer and do
// the work elsewhere: the daemon drops events for a subscriber that does not
// read within 100 ms.
//
// Events blocks until: ctx is done (returns ctx's error, wrapped); the
// stream ends (ErrStreamEnded: daemon stopped/restarted; the caller should
// relist and resubscribe); a transport error occurs (wrapped); or, when
// opts.UntilNano is set, the daemon ends the stream at that time (nil).
// The stream has no heartbeat; a caller that fears a silent hang should
// resubscribe periodically with SinceNano set to the last event's TimeNano.
func (d *Docker) Events(ctx context.Context, opts EventsOptions, handle func(Event)) error {
	actions := opts.Actions
	if actions == nil {
		actions = DefaultEventActions()
	}
	f := d.labelFilters().Add("type", "container").Add("event", actions...)
	lo := client.EventsListOptions{Filters: f}
	if opts.SinceNano > 0 {
		lo.Since = nanoTimestamp(opts.SinceNano)
	}
	if opts.UntilNano > 0 {
		lo.Until = nanoTimestamp(opts.UntilNano)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := d.cli.Events(ctx, lo)
	for {
		select {
		case m := <-res.Messages:
			ev := Event{
				ID:         m.Actor.ID,
				Action:     string(m.Action),
				Attributes: maps0(m.Actor.Attributes),
				TimeNano:   m.TimeNano,
			}
			if ev.TimeNano == 0 {
				ev.TimeNano = m.Time * int64(time.Second)
			}
			handle(ev)
		case err := <-res.Err:
			switch {
			case err == nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				if opts.UntilNano > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
					return nil // the daemon ends the stream at Until
				}
				return fmt.Errorf("docker events: %w (%w)", ErrStreamEnded, cmp.Or(err, io.EOF))
			case ctx.Err() != nil:
				return fmt.Errorf("docker events: %w", ctx.Err())
			default:
				return fmt.Errorf("docker events: %w", err)
			}
		}
	}
}

func nanoTimestamp(n int64) string {
	return fmt.Sprintf("%d.%09d", n/int64(time.Second), n%int64(time.Second))
}

// ---------------------------------------------------------------------------
// helpers

func ptr[T any](v T) *T { return &v }

// maps0 copies m, turning nil into an empty map.
func maps0(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
