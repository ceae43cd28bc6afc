package worker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// metrics are the worker's OpenTelemetry instruments, from the global
// meter: no-ops until the agent configures a meter provider, so the
// worker records unconditionally.
type metrics struct {
	claimedC  metric.Int64Counter
	outcomeC  metric.Int64Counter
	durationH metric.Float64Histogram
	pickupH   metric.Float64Histogram

	// The attribute sets, built once, and the option slices that carry
	// them: a set per record, or a slice for the variadic options of
	// each call, costs allocations on every job, a noticeable part of a
	// short job's CPU. Kinds are kindAttr's (bounded); outcomes are the
	// worker's own constants.
	byKind        map[string]kindOptions
	byKindOutcome map[[2]string][]metric.AddOption
}

type kindOptions struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newKindOptions(o metric.MeasurementOption) kindOptions {
	return kindOptions{add: []metric.AddOption{o}, record: []metric.RecordOption{o}}
}

func newMetrics() *metrics {
	m := otel.Meter("github.com/galaxy/rtmanager/agent/worker")
	// Instrument constructors only fail on invalid names or options,
	// which are constants here; they still return usable no-ops.
	claimed, _ := m.Int64Counter("rtmanager.worker.jobs.claimed",
		metric.WithDescription("Jobs claimed by this agent, by kind."), metric.WithUnit("{job}"))
	outcome, _ := m.Int64Counter("rtmanager.worker.jobs.outcome",
		metric.WithDescription("Job attempts ended, by kind and outcome (succeeded, failed, cancelled, retried)."), metric.WithUnit("{job}"))
	duration, _ := m.Float64Histogram("rtmanager.worker.job.duration",
		metric.WithDescription("Time from claim to outcome of one attempt."), metric.WithUnit("s"))
	pickup, _ := m.Float64Histogram("rtmanager.worker.job.pickup_latency",
		metric.WithDescription("Time from a job being due to its claim, on the database's clock."), metric.WithUnit("s"))
	met := &metrics{claimedC: claimed, outcomeC: outcome, durationH: duration, pickupH: pickup,
		byKind: map[string]kindOptions{}, byKindOutcome: map[[2]string][]metric.AddOption{}}
	kinds := []string{"unknown"}
	for _, k := range job.AllKinds() {
		kinds = append(kinds, string(k))
	}
	outcomes := []string{string(job.StatusSucceeded), string(job.StatusFailed), string(job.StatusCancelled), "retried"}
	for _, k := range kinds {
		met.byKind[k] = newKindOptions(metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", k))))
		for _, o := range outcomes {
			met.byKindOutcome[[2]string{k, o}] = []metric.AddOption{
				metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", k), attribute.String("outcome", o)))}
		}
	}
	return met
}

func (m *metrics) kind(kind string) kindOptions {
	if o, ok := m.byKind[kind]; ok {
		return o
	}
	return newKindOptions(metric.WithAttributes(attribute.String("kind", kind)))
}

// claimed counts n jobs of kind claimed: once per kind and claim, not
// per job.
func (m *metrics) claimed(kind string, n int64) {
	m.claimedC.Add(context.Background(), n, m.kind(kind).add...)
}

func (m *metrics) outcome(kind, outcome string) {
	o, ok := m.byKindOutcome[[2]string{kind, outcome}]
	if !ok {
		o = []metric.AddOption{metric.WithAttributes(attribute.String("kind", kind), attribute.String("outcome", outcome))}
	}
	m.outcomeC.Add(context.Background(), 1, o...)
}

func (m *metrics) duration(kind string, d time.Duration) {
	m.durationH.Record(context.Background(), d.Seconds(), m.kind(kind).record...)
}

func (m *metrics) pickup(kind string, d time.Duration) {
	m.pickupH.Record(context.Background(), max(d, 0).Seconds(), m.kind(kind).record...)
}
