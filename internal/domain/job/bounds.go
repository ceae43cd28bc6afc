package job

// The bounds of a job, part of the contract with the Game Master: the
// validators here use them, contract/*.schema.json states them
// (contract's tests keep the two equal) and the README's "Bounds and
// rules" lists them. A payload limit of 0 or absent takes the default.
const (
	// MinMemoryBytes is the least memory Docker accepts (6 MiB).
	MinMemoryBytes int64 = 6 << 20
	// DefaultMemoryBytes replaces a memory_bytes of 0 (512 MiB).
	DefaultMemoryBytes int64 = 512 << 20
	// MaxMemoryBytes bounds memory_bytes (8 GiB).
	MaxMemoryBytes int64 = 8 << 30

	// MinNanoCPUs is the least CPU quota Docker accepts (0.01 CPU).
	MinNanoCPUs int64 = 10_000_000
	// DefaultNanoCPUs replaces a nano_cpus of 0 (1 CPU).
	DefaultNanoCPUs int64 = 1_000_000_000
	// MaxNanoCPUs bounds nano_cpus (8 CPUs).
	MaxNanoCPUs int64 = 8_000_000_000

	// MinPidsLimit is the least process limit.
	MinPidsLimit int64 = 1
	// DefaultPidsLimit replaces a pids_limit of 0.
	DefaultPidsLimit int64 = 512
	// MaxPidsLimit bounds pids_limit.
	MaxPidsLimit int64 = 8192

	// DefaultStopTimeoutSeconds applies when a stop or restart names no
	// timeout_seconds, and to the stop inside a remove or image change.
	DefaultStopTimeoutSeconds = 30
	// MaxStopTimeoutSeconds bounds timeout_seconds (10 minutes).
	MaxStopTimeoutSeconds = 600

	// MaxPayloadBytes bounds a payload's JSON text as the agent reads it
	// from the jsonb column (64 KiB).
	MaxPayloadBytes = 64 << 10
	// MaxJSONDepth bounds a payload's nesting; the deepest valid payload
	// has two levels.
	MaxJSONDepth = 8

	// MaxEnvVars bounds the number of env variables.
	MaxEnvVars = 128
	// MaxEnvNameBytes bounds an env variable's name.
	MaxEnvNameBytes = 256
	// MaxEnvValueBytes bounds an env variable's value, in UTF-8 bytes.
	MaxEnvValueBytes = 8 << 10

	// MaxImageRefBytes bounds an image reference before it is parsed. The
	// longest valid one (255-byte repository path, domain, 128-byte tag,
	// sha512 digest) fits with room to spare.
	MaxImageRefBytes = 1024

	// MaxStateDirBytes bounds state_dir (PATH_MAX leaves room for the
	// root) and MaxStateDirElementBytes one element of it (NAME_MAX).
	MaxStateDirBytes        = 1024
	MaxStateDirElementBytes = 255

	// The readiness wait of a start, restart or image change of an engine
	// with a health check (ready_timeout_seconds): absent takes the
	// agent's default (RTM_READY_TIMEOUT, DefaultReadyTimeoutSeconds
	// unless configured), otherwise MinReadyTimeoutSeconds..
	// MaxReadyTimeoutSeconds whole seconds.
	MinReadyTimeoutSeconds     = 1
	DefaultReadyTimeoutSeconds = 120
	MaxReadyTimeoutSeconds     = 3600

	// A payload's healthcheck: command is the argv of the probe (at most
	// MaxHealthcheckArgs arguments of at most MaxHealthcheckArgBytes
	// each); interval_ms, timeout_ms and start_period_ms are 0 (the
	// image's value, else Docker's default) or
	// MinHealthcheckMillis..MaxHealthcheckMillis (start period up to
	// MaxHealthcheckStartPeriodMillis); retries is 0 (likewise) or
	// 1..MaxHealthcheckRetries. The minimum keeps one engine's probes
	// from flooding the daemon's 256-event ring (three exec events a
	// probe).
	MaxHealthcheckArgs              = 32
	MaxHealthcheckArgBytes          = 1024
	MinHealthcheckMillis            = 100
	MaxHealthcheckMillis            = 600_000
	MaxHealthcheckStartPeriodMillis = 3_600_000
	MaxHealthcheckRetries           = 100

	// MaxAttemptsLimit bounds a job row's max_attempts: 0 takes the
	// agent's default for the kind (DefaultMaxAttempts), otherwise
	// 1..MaxAttemptsLimit. The jobs table's CHECK says the same.
	MaxAttemptsLimit = 100
)
