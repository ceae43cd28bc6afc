package db

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConnectTimeout bounds the first contact with PostgreSQL at start-up.
const ConnectTimeout = 10 * time.Second

// Connect opens a pool on databaseURL and checks that the server answers,
// with an error that says what to fix.
func Connect(ctx context.Context, databaseURL string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database URL is not valid (%s): expected postgres://user[:password]@host[:port]/dbname[?sslmode=...]", redactIn(err.Error(), databaseURL))
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool for %s: %s", Redact(databaseURL), redactIn(err.Error(), databaseURL))
	}
	pingCtx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, explainConnectError(databaseURL, err)
	}
	return pool, nil
}

// Ping checks that databaseURL is valid and reachable.
func Ping(ctx context.Context, databaseURL string) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("database URL is not valid (%s): expected postgres://user[:password]@host[:port]/dbname[?sslmode=...]", redactIn(err.Error(), databaseURL))
	}
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return explainConnectError(databaseURL, err)
	}
	return conn.Close(context.Background())
}

func explainConnectError(databaseURL string, err error) error {
	msg := oneLine(redactIn(err.Error(), databaseURL))
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		return fmt.Errorf("database in %s does not exist: create it (createdb) or fix the database name in RTM_DATABASE_URL", Redact(databaseURL))
	case errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000"):
		return fmt.Errorf("PostgreSQL refused the credentials for %s: check the user and password in RTM_DATABASE_URL (or RTM_DATABASE_URL_FILE)", Redact(databaseURL))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("cannot reach PostgreSQL at %s within %s: check that the server runs and RTM_DATABASE_URL points at it (%s)", Redact(databaseURL), ConnectTimeout, msg)
	default:
		return fmt.Errorf("cannot connect to PostgreSQL at %s: %s; check that the server runs and RTM_DATABASE_URL points at it", Redact(databaseURL), msg)
	}
}

// Redact renders a database URL for messages: without its password, and
// without query parameters that may carry secrets.
func Redact(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.Scheme == "" {
		return "(unparsable database URL)"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	for key := range q {
		if key == "password" || strings.HasPrefix(key, "sslpassword") {
			q.Set(key, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// redactIn removes the password of databaseURL from a message that may
// quote it.
func redactIn(msg, databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.User == nil {
		return msg
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// oneLine folds pgx's multi-line errors (one line per address tried).
func oneLine(msg string) string {
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}
