// Package config reads the agent's settings from command-line flags and
// RTM_* environment variables. A flag given on the command line wins over
// its environment variable, which wins over the default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/internal/domain/crash"
	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Config is every setting of the agent.
type Config struct {
	DatabaseURL string
	// MigrateDatabaseURL, when set, is where migrations run: a direct
	// connection, when DatabaseURL goes through a transaction pooler.
	MigrateDatabaseURL string
	// PoolerMode is "session" (default: a direct connection or a session
	// pooler) or "transaction" (PgBouncer pool_mode=transaction): no
	// LISTEN, no server-side prepared statements.
	PoolerMode         string
	HostID             string
	DockerHost         string
	DockerNetwork      string
	StateRoot          string
	AllowedImages      []string
	LogFormat          string
	LogLevel           string
	AutoMigrate        bool
	MigrateLockTimeout time.Duration
	HeartbeatInterval  time.Duration
	// HostLeaseTTL is the life of the host lease that makes one agent per
	// host active; HostLeasePoll how often a standby tries to take it
	// (0: a third of the TTL).
	HostLeaseTTL, HostLeasePoll time.Duration

	HTTPAddr string

	// Job worker.
	Concurrency   int
	Prefetch      int
	LeaseDuration time.Duration
	PollInterval  time.Duration
	UseListen     bool
	// ListenPollInterval is the polling period while LISTEN works: only a
	// safety net, so long, to keep an idle agent's load small.
	ListenPollInterval time.Duration
	DrainTimeout       time.Duration

	// Events watcher and reconciler.
	EventsIdleTimeout time.Duration
	ReconcileInterval time.Duration
	OrphanGrace       time.Duration
	// CrashLines and CrashBytes bound the output kept in a crash report.
	CrashLines, CrashBytes int

	// Sweeper.
	SweepSchedule   string
	StoppedTTL      time.Duration
	JobRetention    time.Duration
	OutboxRetention time.Duration
	CrashRetention  time.Duration

	// Console: the operator console (rtmanager console, and rtmanager dev).
	Console ConsoleConfig

	// ReadyTimeout is the default wait for an engine with a health check
	// to be healthy, for jobs that name no ready_timeout_seconds.
	ReadyTimeout time.Duration

	// Image pulls.
	PullTimeout  time.Duration
	PullAttempts int

	// Image garbage collection (in the sweep).
	ImageGC                 bool
	ImageGCMaxUnused        time.Duration
	ImageGCMinAge           time.Duration
	ImageGCHigh, ImageGCLow int
	ImageGCBudgetBytes      int64
}

// ConsoleConfig is the operator console's settings.
type ConsoleConfig struct {
	// Addr is where the console listens.
	Addr string
	// Actions enables cancel and retry; they need Token or TrustedHeader.
	Actions bool
	// Token, when set, lets an operator who presents it act.
	Token string
	// TrustedHeader names a request header set by an authenticating
	// proxy: a request carrying it acts as the user it names.
	TrustedHeader string
	// TraceURL links a job's trace: {trace_id} is replaced by its id.
	TraceURL string
	// DownAfter is the heartbeat age after which a host is shown down
	// (the rule of `rtmanager hosts list --down-after`).
	DownAfter time.Duration
	// PollInterval is how often the live view polls the outbox when it
	// cannot LISTEN (transaction pooler), and its safety net otherwise.
	PollInterval time.Duration
}

// MinConsoleTokenLength keeps guessable tokens out: the token is the only
// secret between the network and the cancel button.
const MinConsoleTokenLength = 16

// MaxPrefetch bounds RTM_PREFETCH: a larger buffer only keeps more jobs
// leased and waiting in one agent, for no measurable gain.
const MaxPrefetch = 10000

// Set binds the settings to the flags of fs, with defaults from the
// environment. It returns a function to call after fs.Parse that reports
// malformed environment values and settings that do not fit together.
func (c *Config) Set(fs *flag.FlagSet, what ...Setting) func() error {
	var envErrs []error
	for _, s := range what {
		registrars[s](c, fs, &envErrs)
	}
	return func() error {
		if err := errors.Join(envErrs...); err != nil {
			return err
		}
		return c.check(what)
	}
}

// Setting names a group of settings a command uses.
type Setting int

const (
	// Database: the database URL and migrations.
	Database Setting = iota
	// Agent: the host identity, Docker and the job policy.
	Agent
	// Logging: log format and level.
	Logging
	// Console: the operator console's address, actions and links.
	Console
)

var registrars = map[Setting]func(c *Config, fs *flag.FlagSet, errs *[]error){
	Database: registerDatabase,
	Agent:    registerAgent,
	Logging:  registerLogging,
	Console:  registerConsole,
}

// registerDatabase registers the database URL (RTM_DATABASE_URL, or a file
// named by RTM_DATABASE_URL_FILE so that the password stays out of the
// environment).
func registerDatabase(c *Config, fs *flag.FlagSet, errs *[]error) {
	def := os.Getenv("RTM_DATABASE_URL")
	if file := os.Getenv("RTM_DATABASE_URL_FILE"); def == "" && file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("RTM_DATABASE_URL_FILE: %w", err))
		}
		def = strings.TrimSpace(string(b))
	}
	fs.StringVar(&c.DatabaseURL, "database-url", def,
		"PostgreSQL URL, postgres://user[:password]@host[:port]/dbname[?sslmode=...] (env RTM_DATABASE_URL, or RTM_DATABASE_URL_FILE naming a file that holds it)")
	fs.StringVar(&c.MigrateDatabaseURL, "migrate-database-url", envString("RTM_MIGRATE_DATABASE_URL", ""),
		"PostgreSQL URL migrations run on, when --database-url goes through a transaction pooler (env RTM_MIGRATE_DATABASE_URL; default --database-url)")
	fs.StringVar(&c.PoolerMode, "db-pooler-mode", envString("RTM_DB_POOLER_MODE", "session"),
		"session, or transaction behind PgBouncer in transaction mode: polling instead of LISTEN, no server-side prepared statements (env RTM_DB_POOLER_MODE)")
	fs.BoolVar(&c.AutoMigrate, "auto-migrate", envBool(errs, "RTM_AUTO_MIGRATE", true),
		"apply pending schema migrations at start-up (env RTM_AUTO_MIGRATE)")
	fs.DurationVar(&c.MigrateLockTimeout, "migrate-lock-timeout", envDuration(errs, "RTM_MIGRATE_LOCK_TIMEOUT", 10*time.Minute),
		"how long to wait for another agent's migration (env RTM_MIGRATE_LOCK_TIMEOUT)")
}

func registerAgent(c *Config, fs *flag.FlagSet, errs *[]error) {
	hostname, _ := os.Hostname()
	fs.StringVar(&c.HostID, "host-id", envString("RTM_HOST_ID", hostname),
		"identity of this Docker host; jobs naming it run here (env RTM_HOST_ID, default the hostname)")
	fs.StringVar(&c.DockerHost, "docker-host", envString("RTM_DOCKER_HOST", os.Getenv("DOCKER_HOST")),
		"Docker daemon address, e.g. unix:///var/run/docker.sock (env RTM_DOCKER_HOST, then DOCKER_HOST)")
	fs.StringVar(&c.DockerNetwork, "docker-network", envString("RTM_DOCKER_NETWORK", "galaxy"),
		"Docker network engine containers join (env RTM_DOCKER_NETWORK)")
	fs.StringVar(&c.StateRoot, "state-root", envString("RTM_STATE_ROOT", "/var/lib/rtmanager/state"),
		"host directory under which every game's state directory must lie (env RTM_STATE_ROOT)")
	fs.Func("allowed-images", "comma-separated image allow-list: repo or repo:* (any tag), repo:tag, repo@digest, or prefix/* (everything below a namespace); empty refuses every image (env RTM_ALLOWED_IMAGES)", func(v string) error {
		c.AllowedImages = splitList(v)
		return nil
	})
	c.AllowedImages = splitList(os.Getenv("RTM_ALLOWED_IMAGES"))
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", envDuration(errs, "RTM_HEARTBEAT_INTERVAL", 20*time.Second),
		"how often the agent refreshes its host's heartbeat (env RTM_HEARTBEAT_INTERVAL)")
	fs.DurationVar(&c.HostLeaseTTL, "host-lease-ttl", envDuration(errs, "RTM_HOST_LEASE_TTL", 60*time.Second),
		"life of the host lease: one agent per host is active; a standby takes over within ttl + poll after it dies (env RTM_HOST_LEASE_TTL)")
	fs.DurationVar(&c.HostLeasePoll, "host-lease-poll", envDuration(errs, "RTM_HOST_LEASE_POLL", 0),
		"how often a standby agent tries to take the host lease; 0 is a third of the ttl (env RTM_HOST_LEASE_POLL)")
	fs.StringVar(&c.HTTPAddr, "http-addr", envString("RTM_HTTP_ADDR", "127.0.0.1:9464"),
		"address of /healthz, /readyz and /metrics; empty disables them (env RTM_HTTP_ADDR)")

	fs.IntVar(&c.Concurrency, "concurrency", envInt(errs, "RTM_CONCURRENCY", 8),
		"jobs run at once; jobs of one game always run one at a time (env RTM_CONCURRENCY)")
	fs.IntVar(&c.Prefetch, "prefetch", envInt(errs, "RTM_PREFETCH", 0),
		"jobs a claim may take beyond the free slots and hold leased until a slot frees; for floods of short jobs (env RTM_PREFETCH)")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", envDuration(errs, "RTM_LEASE_DURATION", 30*time.Second),
		"how long a claimed job stays ours without renewal; a dead agent's jobs rerun after it (env RTM_LEASE_DURATION)")
	fs.DurationVar(&c.PollInterval, "poll-interval", envDuration(errs, "RTM_POLL_INTERVAL", 2*time.Second),
		"how often the queue is polled when no notification came (env RTM_POLL_INTERVAL)")
	fs.BoolVar(&c.UseListen, "listen", envBool(errs, "RTM_LISTEN", true),
		"wake on new jobs through LISTEN/NOTIFY; set false behind a transaction pooler such as PgBouncer (env RTM_LISTEN)")
	fs.DurationVar(&c.ListenPollInterval, "listen-poll-interval", envDuration(errs, "RTM_LISTEN_POLL_INTERVAL", time.Minute),
		"how often the queue is polled while LISTEN works, as a safety net (env RTM_LISTEN_POLL_INTERVAL)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", envDuration(errs, "RTM_DRAIN_TIMEOUT", 30*time.Second),
		"on SIGTERM, how long running jobs may finish before their leases are given back (env RTM_DRAIN_TIMEOUT)")

	fs.DurationVar(&c.EventsIdleTimeout, "events-idle-timeout", envDuration(errs, "RTM_EVENTS_IDLE_TIMEOUT", 30*time.Second),
		"after this long without a Docker event the daemon is pinged, and the stream renewed if it fails (env RTM_EVENTS_IDLE_TIMEOUT)")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", envDuration(errs, "RTM_RECONCILE_INTERVAL", 5*time.Minute),
		"period of the relist that repairs records events missed (env RTM_RECONCILE_INTERVAL)")
	fs.DurationVar(&c.OrphanGrace, "orphan-grace", envDuration(errs, "RTM_ORPHAN_GRACE", 10*time.Minute),
		"age after which a labelled container without a live record is removed; negative never removes (env RTM_ORPHAN_GRACE)")
	fs.IntVar(&c.CrashLines, "crash-lines", envInt(errs, "RTM_CRASH_LINES", crash.DefaultLines),
		"last lines of output kept in the crash report of an engine's unrequested exit (env RTM_CRASH_LINES)")
	fs.IntVar(&c.CrashBytes, "crash-bytes", envInt(errs, "RTM_CRASH_BYTES", crash.DefaultBytes),
		"bound on the bytes of those lines (env RTM_CRASH_BYTES)")

	fs.StringVar(&c.SweepSchedule, "sweep-schedule", envString("RTM_SWEEP_SCHEDULE", "@every 10m"),
		"cron schedule of the cleanup sweep: five fields or @every <duration> (env RTM_SWEEP_SCHEDULE)")
	fs.DurationVar(&c.StoppedTTL, "stopped-ttl", envDuration(errs, "RTM_SWEEP_STOPPED_TTL", 24*time.Hour),
		"how long a stopped game keeps its container before the sweep removes it; 0 never (env RTM_SWEEP_STOPPED_TTL)")
	fs.DurationVar(&c.JobRetention, "job-retention", envDuration(errs, "RTM_JOB_RETENTION", 7*24*time.Hour),
		"how long finished jobs are kept; 0 forever (env RTM_JOB_RETENTION)")
	fs.DurationVar(&c.OutboxRetention, "outbox-retention", envDuration(errs, "RTM_OUTBOX_RETENTION", 7*24*time.Hour),
		"how long outbox events are kept at least, and until every registered consumer read them; 0 forever (env RTM_OUTBOX_RETENTION)")
	fs.DurationVar(&c.CrashRetention, "crash-retention", envDuration(errs, "RTM_CRASH_RETENTION", 30*24*time.Hour),
		"how long crash reports are kept (a game keeps at most its last ten); 0 forever (env RTM_CRASH_RETENTION)")

	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", envDuration(errs, "RTM_READY_TIMEOUT", job.DefaultReadyTimeoutSeconds*time.Second),
		"how long a start, restart or image change waits for an engine with a health check to be healthy, when the job names no ready_timeout_seconds; whole seconds within 1s..1h (env RTM_READY_TIMEOUT)")
	fs.DurationVar(&c.PullTimeout, "pull-timeout", envDuration(errs, "RTM_PULL_TIMEOUT", 10*time.Minute),
		"bound of one image pull, its retries included (env RTM_PULL_TIMEOUT)")
	fs.IntVar(&c.PullAttempts, "pull-attempts", envInt(errs, "RTM_PULL_ATTEMPTS", 3),
		"tries of a pull while the registry is down or failing; a missing image or refused credentials are not tried again (env RTM_PULL_ATTEMPTS)")

	fs.BoolVar(&c.ImageGC, "image-gc", envBool(errs, "RTM_IMAGE_GC", true),
		"remove unused engine images (only images on the allow-list) in every sweep (env RTM_IMAGE_GC)")
	fs.DurationVar(&c.ImageGCMaxUnused, "image-gc-max-unused", envDuration(errs, "RTM_IMAGE_GC_MAX_UNUSED", 24*time.Hour),
		"an allowed image unused for longer is removed; 0 never for age alone (env RTM_IMAGE_GC_MAX_UNUSED)")
	fs.DurationVar(&c.ImageGCMinAge, "image-gc-min-age", envDuration(errs, "RTM_IMAGE_GC_MIN_AGE", 10*time.Minute),
		"under disk pressure, allowed images unused for at least this long are removed (env RTM_IMAGE_GC_MIN_AGE)")
	fs.IntVar(&c.ImageGCHigh, "image-gc-high-percent", envInt(errs, "RTM_IMAGE_GC_HIGH_PERCENT", 85),
		"disk usage of the Docker data root that starts removals; 0 turns the disk rule off (env RTM_IMAGE_GC_HIGH_PERCENT)")
	fs.IntVar(&c.ImageGCLow, "image-gc-low-percent", envInt(errs, "RTM_IMAGE_GC_LOW_PERCENT", 80),
		"disk usage the removals aim for (env RTM_IMAGE_GC_LOW_PERCENT)")
	fs.Int64Var(&c.ImageGCBudgetBytes, "image-gc-budget-bytes", envInt64(errs, "RTM_IMAGE_GC_BUDGET_BYTES", 0),
		"measure the disk usage as the images' bytes against this budget instead of the data root's filesystem (for an agent that does not see it); 0 off (env RTM_IMAGE_GC_BUDGET_BYTES)")
}

func registerLogging(c *Config, fs *flag.FlagSet, errs *[]error) {
	fs.StringVar(&c.LogFormat, "log-format", envString("RTM_LOG_FORMAT", "text"), "log format: text or json (env RTM_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", envString("RTM_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env RTM_LOG_LEVEL)")
}

// registerConsole registers the operator console's settings. The token has
// no flag of its own (a command line is visible to every local user): it
// comes from RTM_CONSOLE_TOKEN or a file.
func registerConsole(c *Config, fs *flag.FlagSet, errs *[]error) {
	cc := &c.Console
	fs.StringVar(&cc.Addr, "console-addr", envString("RTM_CONSOLE_ADDR", "127.0.0.1:9465"),
		"address of the operator console (env RTM_CONSOLE_ADDR)")
	fs.BoolVar(&cc.Actions, "console-actions", envBool(errs, "RTM_CONSOLE_ACTIONS", false),
		"enable the cancel and retry buttons; needs a token or a trusted header (env RTM_CONSOLE_ACTIONS)")
	cc.Token = os.Getenv("RTM_CONSOLE_TOKEN")
	readToken := func(file string) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("console token file: %w", err)
		}
		cc.Token = strings.TrimSpace(string(b))
		return nil
	}
	if file := os.Getenv("RTM_CONSOLE_TOKEN_FILE"); cc.Token == "" && file != "" {
		if err := readToken(file); err != nil {
			*errs = append(*errs, fmt.Errorf("RTM_CONSOLE_TOKEN_FILE: %w", err))
		}
	}
	fs.Func("console-token-file", "a file holding the token that lets an operator act (env RTM_CONSOLE_TOKEN_FILE, or RTM_CONSOLE_TOKEN holding it)", readToken)
	fs.StringVar(&cc.TrustedHeader, "console-trusted-header", envString("RTM_CONSOLE_TRUSTED_HEADER", ""),
		"a header set by an authenticating proxy (e.g. X-Forwarded-User): a request carrying it may act as the user it names; only when the proxy is the sole way in (env RTM_CONSOLE_TRUSTED_HEADER)")
	fs.StringVar(&cc.TraceURL, "console-trace-url", envString("RTM_CONSOLE_TRACE_URL", ""),
		"link to a job's trace, {trace_id} replaced by its id, e.g. http://jaeger:16686/trace/{trace_id} (env RTM_CONSOLE_TRACE_URL)")
	fs.DurationVar(&cc.DownAfter, "console-down-after", envDuration(errs, "RTM_CONSOLE_DOWN_AFTER", 3*20*time.Second),
		"a host whose heartbeat is older than this is shown down, as by `hosts list --down-after` (env RTM_CONSOLE_DOWN_AFTER)")
	fs.DurationVar(&cc.PollInterval, "console-poll-interval", envDuration(errs, "RTM_CONSOLE_POLL_INTERVAL", 2*time.Second),
		"how often live pages poll the outbox without LISTEN (transaction pooler) (env RTM_CONSOLE_POLL_INTERVAL)")
}

// checkConsole reports console settings that cannot work.
func (cc *ConsoleConfig) check() []error {
	var errs []error
	if cc.Addr == "" {
		errs = append(errs, errors.New("--console-addr (RTM_CONSOLE_ADDR) must not be empty"))
	}
	if cc.Token != "" && len(cc.Token) < MinConsoleTokenLength {
		errs = append(errs, fmt.Errorf("the console token (RTM_CONSOLE_TOKEN) must be at least %d characters; make one with `openssl rand -hex 32`", MinConsoleTokenLength))
	}
	if cc.Actions && cc.Token == "" && cc.TrustedHeader == "" {
		errs = append(errs, errors.New("--console-actions (RTM_CONSOLE_ACTIONS) needs RTM_CONSOLE_TOKEN (or RTM_CONSOLE_TOKEN_FILE) or --console-trusted-header: nobody could act otherwise"))
	}
	if h := cc.TrustedHeader; h != "" && !isToken(h) {
		errs = append(errs, fmt.Errorf("--console-trusted-header (RTM_CONSOLE_TRUSTED_HEADER) must be a header name such as X-Forwarded-User, got %q", h))
	}
	if u := cc.TraceURL; u != "" {
		if !strings.Contains(u, "{trace_id}") || !(strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
			errs = append(errs, fmt.Errorf("--console-trace-url (RTM_CONSOLE_TRACE_URL) must be an http(s) URL containing {trace_id}, got %q", u))
		}
	}
	if cc.DownAfter <= 0 {
		errs = append(errs, fmt.Errorf("--console-down-after (RTM_CONSOLE_DOWN_AFTER) must be positive, got %s", cc.DownAfter))
	}
	if cc.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("--console-poll-interval (RTM_CONSOLE_POLL_INTERVAL) must be positive, got %s", cc.PollInterval))
	}
	return errs
}

// isToken reports an HTTP header name (RFC 9110 token).
func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}

func (c *Config) check(what []Setting) error {
	var errs []error
	has := func(s Setting) bool { return slices.Contains(what, s) }
	if has(Database) {
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("no database configured: set RTM_DATABASE_URL (or --database-url) to a postgres:// URL, or use `rtmanager dev` for a throwaway local database"))
		}
		if c.MigrateLockTimeout <= 0 {
			errs = append(errs, errors.New("--migrate-lock-timeout must be positive"))
		}
		switch c.PoolerMode {
		case "session":
		case "transaction":
			// LISTEN needs a session; polling takes over.
			c.UseListen = false
		default:
			errs = append(errs, fmt.Errorf("--db-pooler-mode (RTM_DB_POOLER_MODE) must be session or transaction, got %q", c.PoolerMode))
		}
	}
	if has(Agent) {
		if strings.TrimSpace(c.HostID) == "" {
			errs = append(errs, errors.New("no host id: set RTM_HOST_ID (or --host-id)"))
		}
		for _, d := range []struct {
			name string
			v    time.Duration
		}{
			{"--heartbeat-interval (RTM_HEARTBEAT_INTERVAL)", c.HeartbeatInterval},
			{"--lease-duration (RTM_LEASE_DURATION)", c.LeaseDuration},
			{"--poll-interval (RTM_POLL_INTERVAL)", c.PollInterval},
			{"--drain-timeout (RTM_DRAIN_TIMEOUT)", c.DrainTimeout},
			{"--events-idle-timeout (RTM_EVENTS_IDLE_TIMEOUT)", c.EventsIdleTimeout},
			{"--reconcile-interval (RTM_RECONCILE_INTERVAL)", c.ReconcileInterval},
			{"--host-lease-ttl (RTM_HOST_LEASE_TTL)", c.HostLeaseTTL},
			{"--listen-poll-interval (RTM_LISTEN_POLL_INTERVAL)", c.ListenPollInterval},
		} {
			if d.v <= 0 {
				errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.v))
			}
		}
		if c.HostLeasePoll < 0 {
			errs = append(errs, fmt.Errorf("--host-lease-poll (RTM_HOST_LEASE_POLL) must not be negative, got %s", c.HostLeasePoll))
		}
		if c.PullTimeout <= 0 {
			errs = append(errs, fmt.Errorf("--pull-timeout (RTM_PULL_TIMEOUT) must be positive, got %s", c.PullTimeout))
		}
		if c.ReadyTimeout < job.MinReadyTimeoutSeconds*time.Second || c.ReadyTimeout > job.MaxReadyTimeoutSeconds*time.Second || c.ReadyTimeout%time.Second != 0 {
			errs = append(errs, fmt.Errorf("--ready-timeout (RTM_READY_TIMEOUT) must be whole seconds within %ds..%ds, got %s",
				job.MinReadyTimeoutSeconds, job.MaxReadyTimeoutSeconds, c.ReadyTimeout))
		}
		if c.PullAttempts < 1 {
			errs = append(errs, fmt.Errorf("--pull-attempts (RTM_PULL_ATTEMPTS) must be at least 1, got %d", c.PullAttempts))
		}
		if err := (crash.Limits{Lines: c.CrashLines, Bytes: c.CrashBytes}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--crash-lines/--crash-bytes (RTM_CRASH_LINES/RTM_CRASH_BYTES): %w", err))
		}
		if c.Concurrency < 1 {
			errs = append(errs, fmt.Errorf("--concurrency (RTM_CONCURRENCY) must be at least 1, got %d", c.Concurrency))
		}
		if c.Prefetch < 0 || c.Prefetch > MaxPrefetch {
			errs = append(errs, fmt.Errorf("--prefetch (RTM_PREFETCH) must be between 0 and %d, got %d", MaxPrefetch, c.Prefetch))
		}
		if c.DockerNetwork == "" {
			errs = append(errs, errors.New("--docker-network must not be empty"))
		}
		for _, pattern := range c.AllowedImages {
			if err := job.ValidateImagePattern(pattern); err != nil {
				errs = append(errs, fmt.Errorf("--allowed-images (RTM_ALLOWED_IMAGES): %w", err))
			}
		}
		if !strings.HasPrefix(c.StateRoot, "/") {
			errs = append(errs, fmt.Errorf("--state-root must be an absolute path, got %q", c.StateRoot))
		}
	}
	if has(Console) {
		errs = append(errs, c.Console.check()...)
	}
	if has(Logging) {
		if c.LogFormat != "text" && c.LogFormat != "json" {
			errs = append(errs, fmt.Errorf("--log-format must be text or json, got %q", c.LogFormat))
		}
		switch c.LogLevel {
		case "debug", "info", "warn", "error":
		default:
			errs = append(errs, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", c.LogLevel))
		}
	}
	return errors.Join(errs...)
}

// MigrateURL is the URL migrations run on: MigrateDatabaseURL, else
// DatabaseURL.
func (c *Config) MigrateURL() string {
	if c.MigrateDatabaseURL != "" {
		return c.MigrateDatabaseURL
	}
	return c.DatabaseURL
}

// TransactionPooler reports a database reached through a transaction
// pooler: no session features.
func (c *Config) TransactionPooler() bool { return c.PoolerMode == "transaction" }

func envString(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envBool(errs *[]error, name string, def bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q is not a boolean (use true or false)", name, v))
		return def
	}
	return b
}

func envInt(errs *[]error, name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q is not a whole number", name, v))
		return def
	}
	return n
}

func envInt64(errs *[]error, name string, def int64) int64 {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q is not a whole number", name, v))
		return def
	}
	return n
}

func envDuration(errs *[]error, name string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q is not a duration (use e.g. 30s, 5m)", name, v))
		return def
	}
	return d
}

func splitList(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}
