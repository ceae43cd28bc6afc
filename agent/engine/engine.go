// Package engine is rtmanager's boundary to the Docker daemon.
//
// This package holds every call the program makes to the Docker SDK
// (github.com/moby/moby/client); nothing else imports moby. The rest of the
// agent depends on the small [Engine] interface so that unit tests can fake
// Docker, while [Docker] implements it against a real daemon.
//
// Files by concern: engine.go (this interface, labels, errors), client.go
// (connecting: [Options], [New], [Docker.Ping]), containers.go, images.go
// (pulls), credentials.go (registry credentials), imagegc.go (what image
// garbage collection needs), networks.go and events.go.
//
// Rules enforced here, whatever the caller asks:
//
//   - Every container the agent creates carries [LabelManaged]="true",
//     [LabelHost], [LabelGame] and [LabelJob]. Every mutating call first
//     inspects its target and refuses ([ErrNotManaged]) a container that does
//     not carry LabelManaged="true" and this engine's host id (a start of a
//     container this engine created needs no inspect for that: its id says
//     so). Mutations are then addressed by the container id, never by name.
//   - Engine containers run unprivileged (see [Docker.CreateContainer]).
//   - Operations are idempotent so that at-least-once job delivery is safe:
//     creating an existing container of ours adopts it, starting a running
//     container, stopping a stopped one and removing a gone one all succeed.
//   - Errors say what was being done and map "no such object" to
//     [ErrNotFound].
package engine

import (
	"context"
	"errors"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/crash"
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
	// ErrImageNotFound: the registry does not have the image (no such
	// repository, tag or digest). Retrying does not help.
	ErrImageNotFound = errors.New("image not found in its registry")
	// ErrRegistryAuth: the registry refused the pull with the credentials
	// at hand (none, or wrong ones). Retrying does not help.
	ErrRegistryAuth = errors.New("registry refused the credentials")
	// ErrPullTimeout: a pull did not finish within Options.PullTimeout.
	ErrPullTimeout = errors.New("image pull timed out")
	// ErrImageMissing: the daemon does not have the image a container
	// was to be created from (removed since it was made present). The
	// engine has forgotten it had it: EnsureImage pulls it again.
	ErrImageMissing = errors.New("image is no longer on the host")
	// ErrNetworkMissing: the network a container needs is gone. The
	// engine has forgotten it: EnsureNetwork creates it again.
	ErrNetworkMissing = errors.New("network is no longer on the host")
)

// Engine is the part of Docker the rest of rtmanager depends on. All
// container methods act only on containers labelled as managed by this
// engine's host.
type Engine interface {
	// Ping checks that the daemon answers (and negotiates the API version).
	Ping(ctx context.Context) error
	// EnsureNetwork creates the named bridge network if it is missing.
	EnsureNetwork(ctx context.Context, name string) error
	// EnsureImage pulls ref when the daemon needs it (see
	// [Docker.EnsureImage]) and returns the local image.
	EnsureImage(ctx context.Context, ref string) (Image, error)
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
	// TailLogs returns the last lines of one of our containers' output,
	// bounded and sanitised. See [Docker.TailLogs].
	TailLogs(ctx context.Context, id string, lim crash.Limits) (crash.Output, error)
	// Events streams our containers' events to handle until ctx ends or
	// the stream breaks. See [Docker.Events].
	Events(ctx context.Context, opts EventsOptions, handle func(Event)) error
}

var _ Engine = (*Docker)(nil)

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
