package queuebench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/galaxy/rtmanager/internal/pgcluster"
)

// Server is a throwaway PostgreSQL cluster for a run.
type Server struct {
	// AdminURL is its maintenance database, for Options.AdminURL.
	AdminURL string
	cluster  *pgcluster.Cluster
}

// PID is the cluster's postmaster (for Options.ServerPID), read from its
// postmaster.pid.
func (s *Server) PID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.cluster.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read the server's pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("read the server's pid from postmaster.pid: %w", err)
	}
	return pid, nil
}

// Stop shuts the cluster down and removes it.
func (s *Server) Stop() error { return s.cluster.Stop() }

// StartServer starts a throwaway cluster from the installed PostgreSQL
// binaries with the test suite's settings (internal/testutil/pgtest:
// fsync, synchronous commit and full-page writes off) and
// pg_stat_statements loaded, plus extra settings. With tcp it also
// listens on a free loopback port and AdminURL connects there; otherwise
// AdminURL uses its Unix socket.
func StartServer(ctx context.Context, tcp bool, extra map[string]string) (*Server, error) {
	settings := map[string]string{
		"fsync":                    "off",
		"synchronous_commit":       "off",
		"full_page_writes":         "off",
		"max_connections":          "400",
		"shared_preload_libraries": "pg_stat_statements",
	}
	var port int
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		settings["listen_addresses"] = "127.0.0.1"
		settings["port"] = strconv.Itoa(port)
		// pgcluster's URL names the socket directory but not the port,
		// which the socket's file name carries: libpq's PGPORT supplies it.
		if err := os.Setenv("PGPORT", strconv.Itoa(port)); err != nil {
			return nil, err
		}
	}
	for k, v := range extra {
		settings[k] = v
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: settings})
	if err != nil {
		return nil, err
	}
	s := &Server{AdminURL: c.URL("postgres"), cluster: c}
	if tcp {
		s.AdminURL = fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", c.User, port)
	}
	return s, nil
}
