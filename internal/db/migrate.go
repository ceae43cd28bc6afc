package db

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/migrations"
)

// DefaultMigrateLockTimeout is how long a migration waits for another
// agent's migration to finish. golang-migrate gives up after 15 s by default,
// which would make every agent but one fail when a fleet starts at once and
// a migration is slow.
const DefaultMigrateLockTimeout = 10 * time.Minute

// SchemaVersion is the migration version this build expects: the highest
// numbered migration embedded in it.
var SchemaVersion = latestVersion(migrations.FS)

// MigrateOptions configures a migration run.
type MigrateOptions struct {
	// LockTimeout bounds the wait for the migration lock. Zero:
	// DefaultMigrateLockTimeout.
	LockTimeout time.Duration
	Logger      *slog.Logger
}

// migrateLockKey is the advisory lock agents take around a migration. Its
// first key differs from the per-game lock's, so the two never collide.
const migrateLockKey = 1920234

// MigrateUp applies every pending migration. Several agents may call it at
// once: they serialise on an advisory lock and all but the first find
// nothing left to do.
func MigrateUp(ctx context.Context, databaseURL string, opts MigrateOptions) error {
	return withLockedMigrate(ctx, databaseURL, opts, func(m *migrate.Migrate) error {
		if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return explainMigrateError("migrate up", m, err)
		}
		return nil
	})
}

// MigrateDown reverts the given number of migrations (at least one).
func MigrateDown(ctx context.Context, databaseURL string, steps int, opts MigrateOptions) error {
	if steps < 1 {
		return fmt.Errorf("migrate down: steps must be at least 1, got %d", steps)
	}
	return withLockedMigrate(ctx, databaseURL, opts, func(m *migrate.Migrate) error {
		if err := m.Steps(-steps); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return explainMigrateError("migrate down", m, err)
		}
		return nil
	})
}

// MigrateForce records version as applied without running anything: the
// way out of a dirty schema after its cause was fixed by hand.
func MigrateForce(ctx context.Context, databaseURL string, version int, opts MigrateOptions) error {
	return withLockedMigrate(ctx, databaseURL, opts, func(m *migrate.Migrate) error {
		if err := m.Force(version); err != nil {
			return fmt.Errorf("migrate force %d: %w", version, err)
		}
		return nil
	})
}

// MigrationVersion reports the applied version (0 when none) and whether the
// last migration failed half-way.
func MigrationVersion(ctx context.Context, databaseURL string) (version uint, dirty bool, err error) {
	err = withMigrate(ctx, databaseURL, MigrateOptions{}, func(m *migrate.Migrate) error {
		v, d, err := m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read migration version: %w", err)
		}
		version, dirty = v, d
		return nil
	})
	return version, dirty, err
}

// withLockedMigrate runs a schema change under the migration lock.
//
// golang-migrate has a lock of its own, but its driver takes it while
// opening without any timeout or context, and its timeout (15 s by default)
// applies only later. Our lock is taken first, on a connection of our own,
// with the context and opts.LockTimeout, so that an agent waits for a slow
// migration of another agent as long as configured, can be interrupted,
// and says what it waited for.
func withLockedMigrate(ctx context.Context, databaseURL string, opts MigrateOptions, run func(*migrate.Migrate) error) error {
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = DefaultMigrateLockTimeout
	}
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("database URL is not valid (%s): expected postgres://user[:password]@host[:port]/dbname[?sslmode=...]", redactIn(err.Error(), databaseURL))
	}
	connectCtx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	conn, err := pgx.ConnectConfig(connectCtx, cfg)
	cancel()
	if err != nil {
		return explainConnectError(databaseURL, err)
	}
	// Closing the session releases the lock, whatever happens below.
	defer conn.Close(context.Background())

	lockCtx, cancel := context.WithTimeout(ctx, timeout)
	_, err = conn.Exec(lockCtx, "SELECT pg_advisory_lock($1, 0)", migrateLockKey)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the migration lock: %w", ctx.Err())
		}
		if lockCtx.Err() != nil {
			return fmt.Errorf("another agent held the migration lock for longer than %s: raise --migrate-lock-timeout (RTM_MIGRATE_LOCK_TIMEOUT) or look for a stuck migration in pg_stat_activity", timeout)
		}
		return fmt.Errorf("take the migration lock: %w", err)
	}
	return withMigrate(ctx, databaseURL, opts, run)
}

func withMigrate(ctx context.Context, databaseURL string, opts MigrateOptions, run func(*migrate.Migrate) error) error {
	if err := Ping(ctx, databaseURL); err != nil {
		return err
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return fmt.Errorf("read embedded migrations: %w", err)
	}
	migrateURL, err := migrateDriverURL(databaseURL)
	if err != nil {
		return err
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, migrateURL)
	if err != nil {
		return fmt.Errorf("open migrations on %s: %s", Redact(databaseURL), redactIn(err.Error(), databaseURL))
	}
	defer m.Close()
	m.LockTimeout = opts.LockTimeout
	if m.LockTimeout == 0 {
		m.LockTimeout = DefaultMigrateLockTimeout
	}
	if opts.Logger != nil {
		m.Log = migrateLogger{opts.Logger}
	}
	// golang-migrate takes no context; GracefulStop makes it stop between
	// migrations when ours is cancelled.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			select {
			case m.GracefulStop <- true:
			default:
			}
		case <-done:
		}
	}()
	return run(m)
}

func explainMigrateError(op string, m *migrate.Migrate, err error) error {
	var dirty migrate.ErrDirty
	if errors.As(err, &dirty) {
		return fmt.Errorf("%s: migration %d failed earlier and left the schema marked dirty; repair the schema by hand, then run `rtmanager migrate force %d` with the last version that is fully applied", op, dirty.Version, dirty.Version-1)
	}
	if errors.Is(err, migrate.ErrLockTimeout) {
		return fmt.Errorf("%s: golang-migrate's lock was held for longer than %s by a program other than rtmanager: look for it in pg_stat_activity", op, m.LockTimeout)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func migrateDriverURL(databaseURL string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("database URL must look like postgres://user@host:5432/dbname?sslmode=...: got %s", Redact(databaseURL))
	}
	u.Scheme = "pgx5"
	return u.String(), nil
}

func latestVersion(fsys fs.FS) uint {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		panic(fmt.Sprintf("read embedded migrations: %v", err))
	}
	var latest uint
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".up.sql") {
			continue
		}
		n, err := strconv.ParseUint(strings.SplitN(e.Name(), "_", 2)[0], 10, 32)
		if err != nil {
			panic(fmt.Sprintf("migration %s has no numeric version: %v", e.Name(), err))
		}
		latest = max(latest, uint(n))
	}
	return latest
}

type migrateLogger struct{ l *slog.Logger }

func (m migrateLogger) Printf(format string, v ...any) {
	m.l.Info(strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "migrate")
}
func (m migrateLogger) Verbose() bool { return false }
