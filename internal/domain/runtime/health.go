package runtime

// Health is what Docker's health check says of a running engine. It is
// kept beside the record (column runtime_records.health), not in
// RuntimeRecord: the seed model stays as the user wrote it, and its
// Validate rules say nothing of health.
type Health string

const (
	// HealthNone: no health check, or the engine is not running.
	HealthNone Health = "none"
	// HealthStarting: the check has not passed yet.
	HealthStarting Health = "starting"
	HealthHealthy  Health = "healthy"
	// HealthUnhealthy: the check failed its retries.
	HealthUnhealthy Health = "unhealthy"
)

// IsKnown reports whether h is one of the health values.
func (h Health) IsKnown() bool {
	switch h {
	case HealthNone, HealthStarting, HealthHealthy, HealthUnhealthy:
		return true
	}
	return false
}

// HealthFromDocker maps Docker's health status ("" when the container
// has no check) onto Health; anything unknown is none.
func HealthFromDocker(s string) Health {
	if h := Health(s); h.IsKnown() && h != "" {
		return h
	}
	return HealthNone
}
