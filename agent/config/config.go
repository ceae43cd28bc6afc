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

	"github.com/galaxy/rtmanager/internal/domain/job"
)

// Config is every setting of the agent.
type Config struct {
	DatabaseURL        string
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
}

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
)

var registrars = map[Setting]func(c *Config, fs *flag.FlagSet, errs *[]error){
	Database: registerDatabase,
	Agent:    registerAgent,
	Logging:  registerLogging,
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
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", envDuration(errs, "RTM_HEARTBEAT_INTERVAL", 10*time.Second),
		"how often the agent refreshes its host's heartbeat (env RTM_HEARTBEAT_INTERVAL)")
}

func registerLogging(c *Config, fs *flag.FlagSet, errs *[]error) {
	fs.StringVar(&c.LogFormat, "log-format", envString("RTM_LOG_FORMAT", "text"), "log format: text or json (env RTM_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", envString("RTM_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env RTM_LOG_LEVEL)")
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
	}
	if has(Agent) {
		if strings.TrimSpace(c.HostID) == "" {
			errs = append(errs, errors.New("no host id: set RTM_HOST_ID (or --host-id)"))
		}
		if c.HeartbeatInterval <= 0 {
			errs = append(errs, errors.New("--heartbeat-interval must be positive"))
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
