// Package pgtest gives tests a real PostgreSQL database of their own.
//
// With RTM_TEST_DATABASE_URL set, databases are created on that server (the
// URL's user needs CREATEDB). Without it, the first test that asks starts a
// throwaway cluster from the installed PostgreSQL binaries (package
// pgcluster). Either way a template database is migrated once per test
// binary and every test gets a fresh clone of it, so tests run in parallel
// and never see each other's rows.
//
// A package that uses pgtest runs its tests through Main so that the
// cluster and the template are removed when the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/pgcluster"
)

// EnvDatabaseURL names the variable that points the tests at an existing
// server instead of a throwaway cluster.
const EnvDatabaseURL = "RTM_TEST_DATABASE_URL"

var (
	setupOnce sync.Once
	setupErr  error
	server    *testServer
	counter   atomic.Int64
)

type testServer struct {
	cluster  *pgcluster.Cluster // nil when RTM_TEST_DATABASE_URL is used
	adminURL string             // a maintenance database on the server
	template string
	prefix   string
	createMu sync.Mutex
}

// Main runs the package's tests and tears down what pgtest set up.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main for a TestMain with work of its own after the tests: it
// runs them, tears down what pgtest set up and returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	teardown()
	return code
}

// URL returns the URL of a new, migrated database that is dropped when the
// test ends.
func URL(t testing.TB) string {
	t.Helper()
	s := ensureServer(t)
	name := fmt.Sprintf("%s_%d", s.prefix, counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.createMu.Lock()
	err := s.exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, s.template))
	s.createMu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("pgtest: drop test database %s: %v", name, err)
		}
	})
	return withDatabase(s.adminURL, name)
}

// Pool returns a pool on a new, migrated database; both end with the test.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Connect(context.Background(), URL(t), nil)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// EmptyURL returns the URL of a new database without any migration, for
// tests of the migrations themselves.
func EmptyURL(t testing.TB) string {
	t.Helper()
	s := ensureServer(t)
	name := fmt.Sprintf("%s_e%d", s.prefix, counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create empty database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name))
	})
	return withDatabase(s.adminURL, name)
}

func ensureServer(t testing.TB) *testServer {
	t.Helper()
	setupOnce.Do(func() { server, setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("pgtest: %v", setupErr)
	}
	return server
}

func setup() (*testServer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &testServer{prefix: "rtm_test_" + randomSuffix()}
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		s.adminURL = u
	} else {
		c, err := pgcluster.Start(ctx, pgcluster.Options{
			Settings: map[string]string{
				// Durability is not under test; speed is welcome.
				"fsync":              "off",
				"synchronous_commit": "off",
				"full_page_writes":   "off",
				"max_connections":    "400",
			},
		})
		if err != nil {
			return nil, fmt.Errorf("start a throwaway PostgreSQL (set %s to use an existing server instead): %w", EnvDatabaseURL, err)
		}
		s.cluster = c
		s.adminURL = c.URL("postgres")
	}
	s.template = s.prefix + "_template"
	if err := s.exec(ctx, "CREATE DATABASE "+s.template); err != nil {
		s.stop()
		return nil, fmt.Errorf("create template database: %w", err)
	}
	if err := db.MigrateUp(ctx, withDatabase(s.adminURL, s.template), db.MigrateOptions{}); err != nil {
		s.stop()
		return nil, fmt.Errorf("migrate template database: %w", err)
	}
	return s, nil
}

func teardown() {
	if server != nil {
		server.stop()
	}
}

func (s *testServer) stop() {
	if s.cluster != nil {
		_ = s.cluster.Stop()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = s.exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", s.template))
}

func (s *testServer) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns baseURL with its database name replaced.
func withDatabase(baseURL, name string) string {
	u, err := url.Parse(baseURL)
	if err != nil {
		panic(fmt.Sprintf("pgtest: unparsable database URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(hex.EncodeToString(b[:]))
}
