// Package leader keeps one active agent per host: a lease on the host's
// row in PostgreSQL, taken and renewed with single conditional statements
// (no session advisory locks), so that it works through a transaction
// pooler.
//
// An agent acquires the lease when it is free, expired or already its own,
// and renews it every RenewInterval (a third of the TTL by default). While
// another agent holds it, the agent is a standby: it runs nothing and
// tries again every PollInterval.
//
// The active agent fences itself: when it has not renewed successfully for
// TTL minus Margin, measured on its own monotonic clock from the moment it
// sent the last successful renewal (the database computed that renewal's
// expiry at or after that moment), it cancels everything it runs. It thus
// stops before its lease can expire and before anyone else can take over,
// as long as the two clocks' rates differ by less than Margin over a TTL.
// A renewal that finds the lease gone fences at once.
//
// Handover: a standby takes over at most TTL + PollInterval after the
// active agent died or lost its database connection (the lease runs out,
// then the standby's next poll takes it), and at most PollInterval after a
// clean shutdown, which releases the lease.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/galaxy/rtmanager/internal/db"
)

// DefaultTTL is the lease's default time to live.
const DefaultTTL = 60 * time.Second

// ErrFenced is the cause of an active term's cancellation when the lease
// could not be renewed in time or was found taken.
var ErrFenced = errors.New("host lease lost: this agent fenced itself")

// Store is the lease's persistence (db.Store implements it).
type Store interface {
	AcquireHostLease(ctx context.Context, hostID, agentID, version string, ttl time.Duration) (db.HostLease, error)
	GetHost(ctx context.Context, hostID string) (db.Host, error)
	TakeOverHostLease(ctx context.Context, hostID, deadAgentID, agentID, version string, ttl time.Duration) (db.HostLease, error)
	RenewHostLease(ctx context.Context, hostID, agentID string, ttl time.Duration) error
	ReleaseHostLease(ctx context.Context, hostID, agentID string) (bool, error)
}

// Config configures a Lease. Zero durations take the defaults noted.
type Config struct {
	HostID, AgentID, Version string
	// TTL is how long the lease lives without renewal (DefaultTTL).
	TTL time.Duration
	// RenewInterval is how often the active agent renews (TTL/3).
	RenewInterval time.Duration
	// Margin is how long before the lease could expire the active agent
	// fences itself (TTL/5). It covers the time its parts take to stop
	// and any difference between the agent's and the database's clock
	// rates.
	Margin time.Duration
	// PollInterval is how often a standby tries to acquire (TTL/3).
	PollInterval time.Duration
	// IsDead, when set, tells whether the lease's holder is known to be
	// dead (DeadOnThisMachine): then the lease is taken over at once
	// instead of after its ttl, so an agent restarted after a crash does
	// not wait for its own predecessor's lease.
	IsDead func(agentID string) bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) applyDefaults() error {
	var errs []error
	if strings.TrimSpace(c.HostID) == "" || strings.TrimSpace(c.AgentID) == "" {
		errs = append(errs, errors.New("host lease: host id and agent id must not be empty"))
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.TTL / 3
	}
	if c.Margin == 0 {
		c.Margin = c.TTL / 5
	}
	if c.PollInterval == 0 {
		c.PollInterval = c.TTL / 3
	}
	if c.TTL <= 0 || c.RenewInterval <= 0 || c.Margin <= 0 || c.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("host lease: durations must be positive (ttl %s, renew %s, margin %s, poll %s)", c.TTL, c.RenewInterval, c.Margin, c.PollInterval))
	} else if c.RenewInterval >= c.TTL-c.Margin {
		errs = append(errs, fmt.Errorf("host lease: the renew interval %s must be shorter than the ttl %s minus the safety margin %s", c.RenewInterval, c.TTL, c.Margin))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// Lease runs an agent's work only while it holds its host's lease.
type Lease struct {
	store Store
	cfg   Config
	err   error
	log   *slog.Logger

	active                            atomic.Bool
	primed                            time.Time // TryAcquire's success, for Run
	terms, fences, renewals, failures atomic.Int64
}

// New returns a lease; Run uses it.
func New(store Store, cfg Config) *Lease {
	err := cfg.applyDefaults()
	return &Lease{store: store, cfg: cfg, err: err,
		log: cfg.Logger.With("component", "leader", "host_id", cfg.HostID, "agent_id", cfg.AgentID)}
}

// Config returns the configuration with its defaults.
func (l *Lease) Config() Config { return l.cfg }

// HandoverBound is the longest a standby takes to take over from an
// active agent that died: TTL + PollInterval.
func (l *Lease) HandoverBound() time.Duration { return l.cfg.TTL + l.cfg.PollInterval }

// Active reports whether this agent holds the lease and runs its work.
func (l *Lease) Active() bool { return l.active.Load() }

// Stats are counters since New.
type Stats struct {
	// Terms is how many times the lease was acquired; Fences how many
	// terms ended because it could not be kept.
	Terms, Fences int64
	// Renewals succeeded; RenewFailures failed (without fencing yet).
	Renewals, RenewFailures int64
}

// Stats returns the counters.
func (l *Lease) Stats() Stats {
	return Stats{Terms: l.terms.Load(), Fences: l.fences.Load(), Renewals: l.renewals.Load(), RenewFailures: l.failures.Load()}
}

// Run waits for the lease as a standby, then runs work with a context that
// is cancelled (cause ErrFenced) when the lease cannot be kept. When a
// fenced term's work has returned, it goes back to standby. It returns when
// ctx is done (nil, after releasing the lease) or when work returns while
// the lease is still held (work's error, after releasing the lease).
func (l *Lease) Run(ctx context.Context, work func(ctx context.Context) error) error {
	if l.err != nil {
		return l.err
	}
	for {
		acquired, err := l.waitAcquire(ctx)
		if err != nil {
			return nil // ctx is done
		}
		fenced, werr := l.term(ctx, acquired, work)
		if !fenced {
			l.release()
			if ctx.Err() != nil {
				return nil
			}
			if werr == nil {
				werr = errors.New("the agent's work stopped on its own")
			}
			return werr
		}
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("back to standby after losing the host lease", "work_err", werr)
	}
}

// TryAcquire makes one attempt to take the lease before Run, so that the
// caller knows at once whether it starts active (true) or as a standby
// (false, also when the attempt failed; the error says why). Run then
// goes on from there. Not safe to call concurrently with Run.
func (l *Lease) TryAcquire(ctx context.Context) (bool, error) {
	if l.err != nil {
		return false, l.err
	}
	sent := time.Now()
	actx, cancel := context.WithTimeout(ctx, l.cfg.TTL-l.cfg.Margin)
	lease, err := l.acquire(actx)
	cancel()
	switch {
	case err == nil:
		l.log.Info("host lease acquired: this agent is active", "expires_at", lease.ExpiresAt, "ttl", l.cfg.TTL)
		l.primed = sent
		return true, nil
	case errors.Is(err, db.ErrLeaseHeld):
		return false, nil
	default:
		return false, err
	}
}

// acquire makes one attempt: the lease when it is free, expired or ours,
// or, when its holder is known to be dead, the holder's.
func (l *Lease) acquire(ctx context.Context) (db.HostLease, error) {
	lease, err := l.store.AcquireHostLease(ctx, l.cfg.HostID, l.cfg.AgentID, l.cfg.Version, l.cfg.TTL)
	if !errors.Is(err, db.ErrLeaseHeld) || l.cfg.IsDead == nil {
		return lease, err
	}
	h, herr := l.store.GetHost(ctx, l.cfg.HostID)
	if herr != nil || !l.cfg.IsDead(h.AgentID) {
		return lease, err
	}
	lease, err = l.store.TakeOverHostLease(ctx, l.cfg.HostID, h.AgentID, l.cfg.AgentID, l.cfg.Version, l.cfg.TTL)
	if err == nil {
		l.log.Info("took the host lease over from a dead agent of this machine", "dead_agent_id", h.AgentID,
			"requeued_jobs", lease.RequeuedJobs)
	}
	return lease, err
}

// waitAcquire tries at once, then every PollInterval, until it holds the
// lease; it returns the local time the successful attempt was sent.
func (l *Lease) waitAcquire(ctx context.Context) (time.Time, error) {
	if !l.primed.IsZero() {
		sent := l.primed
		l.primed = time.Time{}
		// Fence from the primed attempt: it may be a while ago.
		return sent, nil
	}
	announced := false
	for {
		sent := time.Now()
		actx, cancel := context.WithTimeout(ctx, l.cfg.TTL-l.cfg.Margin)
		lease, err := l.acquire(actx)
		cancel()
		switch {
		case err == nil:
			l.log.Info("host lease acquired: this agent is active", "expires_at", lease.ExpiresAt, "ttl", l.cfg.TTL)
			return sent, nil
		case ctx.Err() != nil:
			return time.Time{}, ctx.Err()
		case errors.Is(err, db.ErrLeaseHeld):
			if !announced {
				l.log.Info("another agent holds the host lease: standing by", "poll_interval", l.cfg.PollInterval,
					"takeover_within", l.HandoverBound())
				announced = true
			}
		default:
			l.log.Warn("acquiring the host lease failed; retrying", "err", err, "retry_in", l.cfg.PollInterval)
		}
		t := time.NewTimer(l.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
}

// term runs work while renewing the lease acquired at acquired, and
// reports whether the term ended by fencing.
func (l *Lease) term(ctx context.Context, acquired time.Time, work func(ctx context.Context) error) (fenced bool, err error) {
	l.terms.Add(1)
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l.active.Store(true)
	defer l.active.Store(false)

	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		l.keep(tctx, acquired, cancel)
	}()
	err = work(tctx)
	cancel(nil)
	<-renewDone
	return errors.Is(context.Cause(tctx), ErrFenced), err
}

// keep renews the lease until ctx ends, and fences (cancels ctx with
// ErrFenced) when the lease is found lost or was not renewed for TTL -
// Margin since the last successful renewal was sent.
func (l *Lease) keep(ctx context.Context, lastOK time.Time, fence context.CancelCauseFunc) {
	budget := l.cfg.TTL - l.cfg.Margin
	fenceAt := time.NewTimer(time.Until(lastOK.Add(budget)))
	defer fenceAt.Stop()
	renew := time.NewTicker(l.cfg.RenewInterval)
	defer renew.Stop()
	doFence := func(why string, err error) {
		l.fences.Add(1)
		l.log.Error("fencing: stopping all work on this host", "why", why, "err", err,
			"since_last_renewal", time.Since(lastOK).Round(time.Millisecond))
		fence(ErrFenced)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-fenceAt.C:
			doFence(fmt.Sprintf("the lease was not renewed for %s (ttl %s minus margin %s)", budget, l.cfg.TTL, l.cfg.Margin), nil)
			return
		case <-renew.C:
		}
		sent := time.Now()
		// The renewal must not outlast the point where we fence anyway.
		rctx, cancel := context.WithDeadline(ctx, lastOK.Add(budget))
		err := l.store.RenewHostLease(rctx, l.cfg.HostID, l.cfg.AgentID, l.cfg.TTL)
		cancel()
		switch {
		case err == nil:
			l.renewals.Add(1)
			lastOK = sent
			if !fenceAt.Stop() {
				select {
				case <-fenceAt.C:
				default:
				}
			}
			fenceAt.Reset(time.Until(lastOK.Add(budget)))
		case ctx.Err() != nil:
			return
		case errors.Is(err, db.ErrLeaseHeld):
			doFence("the lease expired or another agent took it", err)
			return
		case time.Since(lastOK) >= budget:
			doFence(fmt.Sprintf("the lease was not renewed for %s (ttl %s minus margin %s)", budget, l.cfg.TTL, l.cfg.Margin), err)
			return
		default:
			l.failures.Add(1)
			l.log.Warn("renewing the host lease failed; retrying", "err", err,
				"fence_in", time.Until(lastOK.Add(budget)).Round(time.Millisecond))
		}
	}
}

// release gives the lease up so that a standby takes over at its next
// poll rather than after the TTL.
func (l *Lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := l.store.ReleaseHostLease(ctx, l.cfg.HostID, l.cfg.AgentID)
	switch {
	case err != nil:
		l.log.Warn("releasing the host lease failed; a standby takes over when it expires", "err", err)
	case ok:
		l.log.Info("host lease released")
	}
}
