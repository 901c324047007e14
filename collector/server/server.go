// Package server is the collector's HTTPS API (collector/api is the wire
// contract, openapi.yaml its description). It authenticates every request
// by bearer token, validates what sensors send and hands it to a store.Store.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// DefaultHeartbeatInterval is what sensors are told when Options leaves it 0.
const DefaultHeartbeatInterval = 30 * time.Second

// Timeouts of the HTTP server. Slow clients (a till on a congested shop
// link) get generous body timeouts; headers must arrive promptly.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 2 * time.Minute
	WriteTimeout      = 2 * time.Minute
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 64 << 10
	ShutdownTimeout   = 15 * time.Second
)

// maxJSONBody bounds the small JSON request bodies (enrol, heartbeat).
const maxJSONBody = 64 << 10

// Options configures a Server. Store is required; the rest may be zero.
type Options struct {
	Store store.Store
	// Logger receives request logs (debug) and failures (warn); nil discards.
	Logger *slog.Logger
	// Registry receives the collector's metrics and is served at /metrics;
	// nil creates a private one. Never the global registry, so several
	// servers (tests) can coexist.
	Registry *prometheus.Registry
	// HeartbeatInterval is the interval sensors are told to use.
	HeartbeatInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxConcurrentIngest bounds event batches being read and stored at
	// once (default 64); a batch that finds no slot within IngestWait gets
	// 429 with a jittered Retry-After. After a collector restart a whole
	// fleet reconnects at once: admission keeps the store's work bounded
	// and the sensors' jittered backoff spreads them out.
	MaxConcurrentIngest int
	// IngestWait is how long a batch may wait for a slot (default 250ms).
	IngestWait time.Duration
	// Commands issues kill-switch commands; nil answers the kill-switch
	// routes with 503 (and enrolment hands out no command keys).
	Commands *command.Service
	// Observer sees every batch a sensor had stored (campaign detection);
	// nil means none.
	Observer Observer
	// Rules is the signed rule bundle served to sensors; nil means none.
	Rules RulesSource
	// CredentialTTL is how long an agent credential issued at enrolment
	// works (0: DefaultCredentialTTL, negative: never expires). Sensors
	// renew theirs when a third of it is left.
	CredentialTTL time.Duration
	// Console, when set, is given the API handler and serves what it
	// returns under ConsolePrefix on the same listener (collector/console).
	Console func(api http.Handler) http.Handler
}

// ConsolePrefix is where Options.Console is mounted.
const ConsolePrefix = "/console/"

// DefaultCredentialTTL is the lifetime of agent credentials: long enough
// that a till switched off for a season renews on its return, short
// enough that a copied credential dies.
const DefaultCredentialTTL = 90 * 24 * time.Hour

// Observer is told about stored sensor batches. Observe must return
// quickly: it runs inside the ingest request.
type Observer interface {
	Observe(docs []store.Doc)
}

// Observers tells each of its observers in turn (campaign detection and
// the console's cache).
type Observers []Observer

// Observe implements Observer.
func (o Observers) Observe(docs []store.Doc) {
	for _, x := range o {
		x.Observe(docs)
	}
}

// Server serves the collector API.
type Server struct {
	st       store.Store
	log      *slog.Logger
	reg      *prometheus.Registry
	m        *metrics
	interval time.Duration
	now      func() time.Time

	credentialTTL time.Duration
	handler       http.Handler

	metricsHandler http.Handler

	ingestSlots chan struct{}
	ingestWait  time.Duration

	commands *command.Service
	hub      *hub
	observer Observer
	rules    RulesSource
	console  func(api http.Handler) http.Handler

	// stopping is closed when Serve begins its graceful shutdown, so
	// long-polls answer at once instead of holding it up.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

// New builds a Server. It registers metrics on opts.Registry, so one
// registry serves at most one Server.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("server: no store")
	}
	s := &Server{
		st:       opts.Store,
		log:      opts.Logger,
		reg:      opts.Registry,
		interval: opts.HeartbeatInterval,
		now:      opts.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With(logkey.Component, "server")
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.interval <= 0 {
		s.interval = DefaultHeartbeatInterval
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.MaxConcurrentIngest <= 0 {
		opts.MaxConcurrentIngest = 64
	}
	s.ingestSlots = make(chan struct{}, opts.MaxConcurrentIngest)
	s.ingestWait = opts.IngestWait
	if s.ingestWait <= 0 {
		s.ingestWait = 250 * time.Millisecond
	}
	s.stopping = make(chan struct{})
	s.commands = opts.Commands
	s.observer = opts.Observer
	s.rules = opts.Rules
	switch s.credentialTTL = opts.CredentialTTL; {
	case s.credentialTTL == 0:
		s.credentialTTL = DefaultCredentialTTL
	case s.credentialTTL < 0:
		s.credentialTTL = 0
	}
	s.console = opts.Console
	if cs, ok := s.st.(store.CommandStore); ok {
		s.hub = newHub(cs, s.log, s.now)
	}
	m, err := newMetrics(s.reg, s.st)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.metricsHandler = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	s.handler = s.routes()
	return s, nil
}

// Handler returns the API as an http.Handler (for httptest or a custom
// listener).
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server with the collector's timeouts, serving
// the API with tlsCfg.
func (s *Server) HTTPServer(tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		// TLS handshake failures from scanners and mis-pinned sensors
		// would flood warn; they belong at debug.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Serve serves HTTPS on ln until ctx is cancelled, then shuts down
// gracefully, letting in-flight requests finish for up to ShutdownTimeout.
// It closes ln. A nil error means a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	if tlsCfg == nil {
		return errors.New("server: TLS configuration required")
	}
	srv := s.HTTPServer(tlsCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	s.stoppingOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// Route is one documented API route.
type Route struct {
	Method string
	Path   string
	// Roles may call the route; nil means no authentication.
	Roles []string
}

var readers = []string{api.RoleAnalyst, api.RoleResponder}

// Routes lists every route the server registers; a test checks it against
// openapi.yaml both ways.
func Routes() []Route {
	return []Route{
		// An agent enrols again to renew its credential (its own host only).
		{http.MethodPost, api.PathEnroll, []string{api.RoleSensor, api.RoleAgent}},
		{http.MethodPost, api.PathEvents, []string{api.RoleAgent}},
		{http.MethodPost, api.PathHeartbeat, []string{api.RoleAgent}},
		{http.MethodGet, api.PathAlerts, readers},
		{http.MethodGet, api.PathHosts, readers},
		{http.MethodGet, api.PathOpenAPI, nil},
		{http.MethodGet, api.PathHealthz, nil},
		{http.MethodGet, api.PathMetrics, readers},
		{http.MethodPost, api.PathCommands, []string{api.RoleResponder}},
		{http.MethodGet, api.PathCommands, readers},
		{http.MethodGet, api.PathCommand, readers},
		{http.MethodPost, api.PathCommandApprove, []string{api.RoleResponder}},
		{http.MethodGet, api.PathCommandsPending, []string{api.RoleAgent}},
		{http.MethodPost, api.PathCommandAck, []string{api.RoleAgent}},
		{http.MethodGet, api.PathSensorRules, []string{api.RoleAgent}},
	}
}

func (s *Server) routes() http.Handler {
	handlers := map[string]http.HandlerFunc{
		http.MethodPost + " " + api.PathCommands:       s.handleIssue,
		http.MethodGet + " " + api.PathCommands:        s.handleCommands,
		http.MethodGet + " " + api.PathCommand:         s.handleCommand,
		http.MethodPost + " " + api.PathCommandApprove: s.handleApprove,
		http.MethodGet + " " + api.PathCommandsPending: s.handlePending,
		http.MethodPost + " " + api.PathCommandAck:     s.handleAck,
		api.PathSensorRules:                            s.handleSensorRules,
		api.PathEnroll:                                 s.handleEnroll,
		api.PathEvents:                                 s.handleEvents,
		api.PathHeartbeat:                              s.handleHeartbeat,
		api.PathAlerts:                                 s.handleAlerts,
		api.PathHosts:                                  s.handleHosts,
		api.PathOpenAPI:                                s.handleOpenAPI,
		api.PathHealthz:                                s.handleHealthz,
		api.PathMetrics:                                s.handleMetrics,
	}
	mux := http.NewServeMux()
	methods := map[string][]string{}
	for _, rt := range Routes() {
		methods[rt.Path] = append(methods[rt.Path], rt.Method)
	}
	for _, rt := range Routes() {
		h, ok := handlers[rt.Method+" "+rt.Path]
		if !ok {
			h = handlers[rt.Path]
		}
		if rt.Roles != nil {
			h = s.authed(rt.Roles, h)
		}
		mux.Handle(rt.Method+" "+rt.Path, h)
	}
	for path, ms := range methods {
		// The method-less pattern is less specific, so it only catches the
		// wrong methods, answering in JSON like everything else.
		allowed := slices.Clone(ms)
		if slices.Contains(ms, http.MethodGet) {
			allowed = append(allowed, http.MethodHead)
		}
		allow := strings.Join(allowed, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.fail(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+strings.Join(ms, " or "))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "no such route "+r.URL.Path+"; see "+api.PathOpenAPI)
	})
	h := s.observe(mux)
	if s.console == nil {
		return h
	}
	outer := http.NewServeMux()
	outer.Handle("/", h)
	outer.Handle(ConsolePrefix, s.console(h))
	outer.Handle("GET "+strings.TrimSuffix(ConsolePrefix, "/"), http.RedirectHandler(ConsolePrefix, http.StatusFound))
	return outer
}

// RoleTable maps "METHOD PATH" of every authenticated route to the roles
// that may call it: the console authorises its pages with the same table.
func RoleTable() map[string][]string {
	out := map[string][]string{}
	for _, rt := range Routes() {
		if rt.Roles != nil {
			out[rt.Method+" "+rt.Path] = rt.Roles
		}
	}
	return out
}
