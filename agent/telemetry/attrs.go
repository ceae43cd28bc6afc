package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Span and metric attributes shared by the agent's parts. Where
// OpenTelemetry has a semantic convention (container.id) it is used; the
// rest live under the rtmanager.* namespace.
const (
	KeyGameID  = attribute.Key("rtmanager.game.id")
	KeyHostID  = attribute.Key("rtmanager.host.id")
	KeyJobID   = attribute.Key("rtmanager.job.id")
	KeyJobKind = attribute.Key("rtmanager.job.kind")
)

// GameID is the game a span is about.
func GameID(id string) attribute.KeyValue { return KeyGameID.String(id) }

// HostID is the Docker host a span is about.
func HostID(id string) attribute.KeyValue { return KeyHostID.String(id) }

// JobID is the job a span is about.
func JobID(id int64) attribute.KeyValue { return KeyJobID.Int64(id) }

// JobKind is the kind of the job a span is about.
func JobKind(kind string) attribute.KeyValue { return KeyJobKind.String(kind) }

// ContainerID is the Docker container a span is about.
func ContainerID(id string) attribute.KeyValue { return semconv.ContainerID(id) }
