package liveness

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/galaxy/rtmanager/internal/db"
)

// FleetStore is what the fleet gauges read (db.Store implements it).
type FleetStore interface {
	FleetQueueDepth(ctx context.Context) ([]db.HostQueue, error)
	FleetHostsDown(ctx context.Context) (int64, error)
}

// ActiveFunc reports whether this agent holds its host's lease.
type ActiveFunc func() bool

// RegisterFleetMetrics registers, on the global meter, observable gauges
// of the fleet as the database sees it: rtmanager.fleet.queue_depth (queued
// jobs per host_id, with live=false for a host without a live agent, whose
// jobs wait for it), rtmanager.fleet.hosts_down (registered hosts whose
// lease expired or was released), and rtmanager.agent.active (1 when this
// agent holds its host's lease, 0 on a standby). The database is read only
// when the metrics are collected (two statements per scrape). The returned
// function unregisters them.
func RegisterFleetMetrics(store FleetStore, active ActiveFunc, log *slog.Logger) (func() error, error) {
	if log == nil {
		log = slog.Default()
	}
	m := otel.Meter("github.com/galaxy/rtmanager/agent/liveness")
	depth, err := m.Int64ObservableGauge("rtmanager.fleet.queue_depth", metric.WithUnit("{job}"),
		metric.WithDescription("Queued jobs per host; live=false: no agent holds the host's lease and the jobs wait for one."))
	if err != nil {
		return nil, err
	}
	down, err := m.Int64ObservableGauge("rtmanager.fleet.hosts_down", metric.WithUnit("{host}"),
		metric.WithDescription("Registered hosts without a live agent (host lease expired or released)."))
	if err != nil {
		return nil, err
	}
	act, err := m.Int64ObservableGauge("rtmanager.agent.active",
		metric.WithDescription("1 when this agent holds its host's lease and works, 0 when it stands by."))
	if err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if active != nil {
			v := int64(0)
			if active() {
				v = 1
			}
			o.ObserveInt64(act, v)
		}
		queues, err := store.FleetQueueDepth(ctx)
		if err != nil {
			log.Warn("fleet metrics: reading queue depth failed", "err", err)
			return nil
		}
		for _, q := range queues {
			o.ObserveInt64(depth, q.Queued, metric.WithAttributes(attribute.String("host_id", q.HostID), attribute.Bool("live", q.Live)))
		}
		n, err := store.FleetHostsDown(ctx)
		if err != nil {
			log.Warn("fleet metrics: counting hosts down failed", "err", err)
			return nil
		}
		o.ObserveInt64(down, n)
		return nil
	}, depth, down, act)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
