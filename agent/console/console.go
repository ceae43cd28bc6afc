// Package console is the operator console: a web page over the whole fleet
// (hosts, games, jobs, events) read from the shared database, live through
// Server-Sent Events, with optional cancel and retry actions.
//
// Pages are rendered on the server with html/template from embedded files
// (web/); the only script is web/static/console.js, which the
// Content-Security-Policy allows as the one script source. Everything
// shown is escaped: job errors, payloads and event values come from
// writers the console does not trust.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/internal/db"
	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/rtmclient"
)

//go:embed web
var webFS embed.FS

// Options configure a console.
type Options struct {
	// Pool reads the rtmanager database; configure it with ConfigurePool.
	Pool *pgxpool.Pool
	// Logger receives request errors and every action, with who did it.
	Logger *slog.Logger
	// Actions shows the cancel and retry buttons and accepts them from
	// an operator authenticated by Token or TrustedHeader.
	Actions       bool
	Token         string
	TrustedHeader string
	// TraceURL links a job's trace; {trace_id} is replaced by its id.
	TraceURL string
	// DownAfter is the heartbeat age after which a host is down.
	DownAfter time.Duration
	// Listen wakes the live view with LISTEN on a session connection;
	// without it (a transaction pooler) the outbox is polled.
	Listen bool
	// PollInterval is the outbox polling period without LISTEN, and the
	// safety net with it.
	PollInterval time.Duration
	// Version is shown in the page footer.
	Version string
}

// Server is the console's HTTP handler and its live-event broker.
type Server struct {
	opts   Options
	log    *slog.Logger
	q      *dbsqlc.Queries
	store  *db.Store
	client *rtmclient.Client
	pages  map[string]*page
	auth   *auth
	live   *broker
	static http.Handler
}

// ConfigurePool makes every statement run unnamed, planned with its
// values: the console's optional filters then use the index of the filter
// that is set, and it works behind a transaction pooler.
func ConfigurePool(pc *pgxpool.Config) {
	pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
}

// New returns a console on opts.Pool.
func New(opts Options) (*Server, error) {
	if opts.Pool == nil {
		return nil, errors.New("console: no database pool")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.Actions && opts.Token == "" && opts.TrustedHeader == "" {
		return nil, errors.New("console: actions need a token or a trusted header")
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	a, err := newAuth(opts.Token, opts.TrustedHeader)
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, fmt.Errorf("console: static files: %w", err)
	}
	s := &Server{
		opts: opts, log: opts.Logger, q: dbsqlc.New(opts.Pool), store: db.NewStore(opts.Pool, nil),
		client: rtmclient.New(opts.Pool), pages: pages, auth: a,
		static: http.StripPrefix("/static/", http.FileServerFS(static)),
	}
	s.live = newBroker(opts.Pool, opts.Listen, opts.PollInterval, opts.Logger)
	return s, nil
}

// Handler returns the console's routes behind its security headers.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.fleetPage)
	mux.HandleFunc("GET /games", s.gamesPage)
	mux.HandleFunc("GET /games/{id}", s.gamePage)
	mux.HandleFunc("GET /jobs", s.jobsPage)
	mux.HandleFunc("GET /jobs/{id}", s.jobPage)
	mux.HandleFunc("GET /activity", s.activityPage)
	mux.HandleFunc("GET /live", s.liveStream)
	mux.Handle("GET /static/", s.static)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.HandleFunc("POST /jobs/{id}/cancel", s.cancelJob)
	mux.HandleFunc("POST /jobs/{id}/retry", s.retryJob)
	// Cross-origin POSTs (a form on another site, through the operator's
	// browser) are refused before any handler runs; the handlers also
	// check a per-session CSRF token.
	cop := http.NewCrossOriginProtection()
	return securityHeaders(cop.Handler(mux))
}

// contentSecurityPolicy allows the console's own script and stylesheet and
// nothing else: no inline script or style, no plugin, no frame, no form
// posting elsewhere.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		if r.URL.Path == "/static/" || len(r.URL.Path) < 8 || r.URL.Path[:8] != "/static/" {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// RunLive reads new events for the live stream until ctx ends. Serve runs
// it; a caller that serves Handler itself runs it alongside.
func (s *Server) RunLive(ctx context.Context) { s.live.run(ctx) }

// Serve runs the console on ln until ctx ends, then shuts it down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: the live stream stays open.
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	liveCtx, stopLive := context.WithCancel(ctx)
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		s.RunLive(liveCtx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopLive()
	<-liveDone
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
