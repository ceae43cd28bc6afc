package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

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
	OOMKilled bool // as reported by the daemon; it can miss a kill on cgroup v2, and with containerd 1.7 on v1
	// Health is Docker's health status ("" without a health check) and
	// HealthOutput the output of its last probe.
	Health       string
	HealthOutput string
	// HasHealthcheck reports a health check in the container's config
	// (the payload's, or the image's merged in at creation), whatever the
	// state: a job waits for such an engine to be healthy.
	HasHealthcheck bool

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

	// Healthcheck, when set, replaces the image's HEALTHCHECK.
	Healthcheck *Healthcheck
}

// Healthcheck is a container's health check: Command is run without a
// shell (Docker's ["CMD", ...] form); zero durations and retries keep the
// image's values, else Docker's defaults.
type Healthcheck struct {
	Command     []string
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// healthConfig is Docker's form of h (nil: the image's).
func healthConfig(h *Healthcheck) *container.HealthConfig {
	if h == nil {
		return nil
	}
	return &container.HealthConfig{
		Test:        append([]string{"CMD"}, h.Command...),
		Interval:    h.Interval,
		Timeout:     h.Timeout,
		StartPeriod: h.StartPeriod,
		Retries:     h.Retries,
	}
}

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
//
// A container created here is not inspected: what it is, the spec and the
// daemon's id say (State "created"; ImageID, CreatedAt and the times are
// left zero, InspectContainer has them). Its id is remembered as ours, so
// StartContainer needs no inspect to check that either.
//
// The network is taken to stand once EnsureNetwork made sure of it. When
// the daemon answers that it does not (removed since) or that the name is
// ambiguous (another agent created a duplicate), the network is ensured
// again and the create retried. When the daemon no longer has the image,
// the engine forgets that it had it (see EnsureImage) and the error wraps
// ErrImageMissing: make the image present again and retry.
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
			Image:       spec.Image,
			Env:         slices.Clone(spec.Env),
			Labels:      labels,
			Healthcheck: healthConfig(spec.Healthcheck),
		},
		HostConfig:       hc,
		NetworkingConfig: nc,
	}

	// A retry loop covers the race where the conflicting container is
	// removed between our create and our inspect, and a network that went
	// away.
	networkEnsured := false
	for attempt := 0; ; attempt++ {
		res, err := d.cli.ContainerCreate(ctx, opts)
		if err == nil {
			d.remember(res.ID)
			return Container{
				ID: res.ID, Name: spec.Name, Image: spec.Image, Labels: maps0(labels), State: "created",
				GameID: spec.GameID, HostID: spec.HostID, JobID: spec.JobID,
			}, nil
		}
		if imageGone(err) {
			d.forgetImages()
			return Container{}, fmt.Errorf("create container %s: %w: %w", spec.Name, ErrImageMissing, mapErr(err))
		}
		if spec.Network != "" && networkGone(err) {
			d.forgetNetworks()
			if networkEnsured {
				return Container{}, fmt.Errorf("create container %s: %w: %w", spec.Name, ErrNetworkMissing, mapErr(err))
			}
			if nerr := d.EnsureNetwork(ctx, spec.Network); nerr != nil {
				return Container{}, fmt.Errorf("create container %s: network %s gone (%v): %w", spec.Name, spec.Network, err, nerr)
			}
			networkEnsured = true
			continue
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
	if h := spec.Healthcheck; h != nil && (len(h.Command) == 0 || h.Command[0] == "" || h.Interval < 0 || h.Timeout < 0 || h.StartPeriod < 0 || h.Retries < 0) {
		problems = append(problems, "health check without a command or with a negative setting")
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

// maxCreatedIDs bounds the ids remembered as created here; past it they
// are forgotten, and a start of an older one inspects it first.
const maxCreatedIDs = 4096

// remember notes id as a container this engine created.
func (d *Docker) remember(id string) {
	d.createdMu.Lock()
	defer d.createdMu.Unlock()
	if len(d.createdIDs) >= maxCreatedIDs || d.createdIDs == nil {
		d.createdIDs = make(map[string]struct{})
	}
	d.createdIDs[id] = struct{}{}
}

// created reports whether this engine created the container with that
// full id: a container id names one container for good, and ours carry
// our labels from their creation.
func (d *Docker) created(id string) bool {
	d.createdMu.Lock()
	defer d.createdMu.Unlock()
	_, ok := d.createdIDs[id]
	return ok
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

// StartContainer implements Engine. A container this engine created is
// started without an inspect: its id says it is ours, and the daemon
// answers a start of a running container with success (304). When the
// daemon cannot start it because its network is gone, the error wraps
// ErrNetworkMissing and the network is ensured again by the next
// EnsureNetwork; the container, attached to the network that was, has to
// be created again.
func (d *Docker) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	if !d.created(id) {
		c, err := d.managed(ctx, id)
		if err != nil {
			return fmt.Errorf("start container %s: %w", id, err)
		}
		if c.Running {
			return nil
		}
		id = c.ID
	}
	if _, err := d.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		if networkGone(err) {
			d.forgetNetworks()
			return fmt.Errorf("start container %s: %w: %w", id, ErrNetworkMissing, mapErr(err))
		}
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
		if h := r.Config.Healthcheck; h != nil && len(h.Test) > 0 && h.Test[0] != "NONE" {
			c.HasHealthcheck = true
		}
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
		if h := s.Health; h != nil {
			c.Health = string(h.Status)
			if n := len(h.Log); n > 0 && h.Log[n-1] != nil {
				c.HealthOutput = h.Log[n-1].Output
			}
		}
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
