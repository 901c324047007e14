// Package console is the collector's web console: one page for the shop,
// the chain and the kill-switch, served by the collector on its own TLS
// listener under /console/.
//
// It has no authentication of its own. A browser signs in by handing over
// an analyst or responder API token, which the console checks with the
// store exactly as the API does and exchanges for a server-side session
// (random id in an HttpOnly, Secure, SameSite=Strict cookie). Every later
// request authenticates that token again, then applies the API's own route
// and role table: the console's read views are allowed to the roles of the
// API route they are built from, and everything else (kill-switch issue,
// approval, command lists) is the API itself, called in-process with the
// session's token. State-changing requests carry a CSRF token checked in
// constant time and must come from the console's own origin.
//
// Assets are embedded (plain HTML, CSS and a small script), fetched from
// the collector only, under a Content-Security-Policy that allows no
// inline script or style.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console lives on the collector.
const Prefix = "/console/"

// CSRFHeader carries the session's CSRF token on state-changing requests.
const CSRFHeader = "X-CSRF-Token"

// maxSignInBody bounds the sign-in request.
const maxSignInBody = 4 << 10

// Options configures the console. Store and Roles are required.
type Options struct {
	Store store.Store
	// Roles maps "METHOD PATH" of each authenticated API route to the roles
	// that may call it (server.RoleTable()).
	Roles map[string][]string
	// SilenceAfter is how long a till may stay unheard before the stores
	// page shows it silenced (the collector's silence_after; default 5m).
	SilenceAfter time.Duration
	// AlertWindow is how far back alerts make a till "alerting" or
	// "attack stopped" (default 24h).
	AlertWindow time.Duration
	// IdleTimeout and MaxLifetime bound a session (defaults
	// DefaultIdleTimeout, DefaultMaxLifetime).
	IdleTimeout, MaxLifetime time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Console serves the web console.
type Console struct {
	st       store.Store
	ov       store.Overview
	roles    map[string][]string
	silence  time.Duration
	window   time.Duration
	sessions *sessions
	now      func() time.Time
	log      *slog.Logger
	static   http.Handler
	index    []byte
	tally    *tallyCache
}

// New builds a Console.
func New(o Options) (*Console, error) {
	if o.Store == nil {
		return nil, errors.New("console: no store")
	}
	ov, ok := o.Store.(store.Overview)
	if !ok {
		return nil, fmt.Errorf("console: the store (%T) answers no aggregate queries (store.Overview)", o.Store)
	}
	if len(o.Roles) == 0 {
		return nil, errors.New("console: no role table")
	}
	if o.SilenceAfter <= 0 {
		o.SilenceAfter = 5 * time.Minute
	}
	if o.AlertWindow <= 0 {
		o.AlertWindow = 24 * time.Hour
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		return nil, err
	}
	return &Console{
		st: o.Store, ov: ov, roles: o.Roles, silence: o.SilenceAfter, window: o.AlertWindow,
		sessions: newSessions(o.IdleTimeout, o.MaxLifetime, o.Now), now: o.Now,
		log:    o.Logger.With(logkey.Component, "console"),
		static: http.StripPrefix(Prefix+"static/", http.FileServerFS(sub)),
		index:  index,
		tally:  &tallyCache{src: ov, window: o.AlertWindow, ttl: tallyTTL},
	}, nil
}

// Handler returns the console's handler, calling apiHandler (the
// collector's API) for the routes it passes through.
func (c *Console) Handler(apiHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"{$}", c.handleIndex)
	mux.HandleFunc("GET "+Prefix+"static/{file}", c.handleStatic)
	mux.HandleFunc("POST "+Prefix+"session", c.handleSignIn)
	mux.HandleFunc("GET "+Prefix+"session", c.handleWhoAmI)
	mux.HandleFunc("POST "+Prefix+"logout", c.handleLogout)
	mux.Handle("GET "+Prefix+"data/stores", c.view(api.PathHosts, c.handleStores))
	mux.Handle("GET "+Prefix+"data/alerts", c.view(api.PathAlerts, c.handleAlerts))
	mux.Handle("GET "+Prefix+"data/alert", c.view(api.PathAlerts, c.handleAlert))
	mux.Handle("GET "+Prefix+"data/host", c.view(api.PathHosts, c.handleHost))
	mux.Handle(Prefix+"api/", c.passThrough(apiHandler))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such console page "+r.URL.Path)
	})
	return securityHeaders(mux)
}

// securityHeaders sets what every console answer carries: a CSP with no
// inline script or style and no framing, no MIME sniffing, no referrer.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

func (c *Console) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(c.index)
}

func (c *Console) handleStatic(w http.ResponseWriter, r *http.Request) {
	switch r.PathValue("file") {
	case "app.js", "style.css", "sign.js":
	default:
		writeError(w, http.StatusNotFound, "no such file")
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	c.static.ServeHTTP(w, r)
}

// sameOrigin refuses a state-changing request that a browser marks as sent
// from another site, or whose Origin is not this collector. Browsers send
// at least one of the two on every POST; a request with neither is not a
// browser's, so no cookie of a victim rides on it.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return false
	}
	return true
}

// signInRequest is what the sign-in form posts.
type signInRequest struct {
	Token string `json:"token"`
}

// sessionInfo is what the browser learns about its session.
type sessionInfo struct {
	Role      string    `json:"role"`
	CSRF      string    `json:"csrf"`
	ExpiresAt time.Time `json:"expires_at"`
	// CanIssue and CanApprove come from the API's role table, so the page
	// shows the kill-switch forms only to whom the API would obey.
	CanIssue   bool `json:"can_issue"`
	CanApprove bool `json:"can_approve"`
}

func (c *Console) info(ss *session) sessionInfo {
	return sessionInfo{
		Role: ss.role, CSRF: ss.csrf, ExpiresAt: c.sessions.expiresAt(ss),
		CanIssue:   slices.Contains(c.roles[http.MethodPost+" "+api.PathCommands], ss.role),
		CanApprove: slices.Contains(c.roles[http.MethodPost+" "+api.PathCommandApprove], ss.role),
	}
}

func (c *Console) handleSignIn(w http.ResponseWriter, r *http.Request) {
	// A login form posted from another site (login CSRF) carries neither
	// a JSON content type nor this origin.
	if !sameOrigin(r) || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		writeError(w, http.StatusForbidden, "sign-in must come from the console page itself")
		return
	}
	var req signInRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSignInBody))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "sign-in body must be {\"token\": \"tw_...\"}")
		return
	}
	tok := strings.TrimSpace(req.Token)
	if !strings.HasPrefix(tok, store.TokenPrefix) {
		writeError(w, http.StatusUnauthorized, "not a tillwatch token (they start with "+store.TokenPrefix+")")
		return
	}
	role, err := c.authenticate(r.Context(), tok)
	if err != nil {
		c.authError(w, err)
		return
	}
	if role != api.RoleAnalyst && role != api.RoleResponder {
		writeError(w, http.StatusForbidden, "a "+role+" token cannot sign in to the console; use an analyst or responder token")
		return
	}
	ss := c.sessions.create(tok, role)
	c.setCookie(w, ss.id, c.sessions.max)
	c.log.Info("console sign-in", "role", role, logkey.Remote, r.RemoteAddr, "token_id", store.HashToken(tok)[:12])
	writeJSON(w, http.StatusOK, c.info(ss))
}

func (c *Console) setCookie(w http.ResponseWriter, id string, maxAge time.Duration) {
	ck := &http.Cookie{
		Name: CookieName, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge.Seconds()),
	}
	if id == "" {
		ck.MaxAge = -1
	}
	http.SetCookie(w, ck)
}

// authenticate asks the store, exactly as the API's middleware does.
func (c *Console) authenticate(ctx context.Context, tok string) (string, error) {
	role, _, err := c.st.Authenticate(ctx, tok)
	return role, err
}

func (c *Console) authError(w http.ResponseWriter, err error) {
	var expired *store.TokenExpiredError
	switch {
	case errors.As(err, &expired):
		writeError(w, http.StatusUnauthorized, "token expired at "+expired.At.UTC().Format(time.RFC3339)+"; ask for a new one")
	case errors.Is(err, store.ErrUnknownToken):
		writeError(w, http.StatusUnauthorized, "unknown or revoked token")
	default:
		c.log.Error("console: store unavailable", logkey.Error, err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
	}
}

// current returns the request's live session, its token authenticated
// again; it answers the failure itself and returns nil.
func (c *Console) current(w http.ResponseWriter, r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "not signed in")
		return nil
	}
	ss := c.sessions.get(ck.Value)
	if ss == nil {
		c.setCookie(w, "", 0)
		writeError(w, http.StatusUnauthorized, "session expired; sign in again")
		return nil
	}
	role, err := c.authenticate(r.Context(), ss.token)
	if err != nil {
		if !errors.Is(err, store.ErrUnknownToken) && !errors.Is(err, store.ErrTokenExpired) {
			c.authError(w, err)
			return nil
		}
		// The token was revoked or expired: so is every session made of it.
		c.sessions.delete(ss.id)
		c.setCookie(w, "", 0)
		c.authError(w, err)
		return nil
	}
	ss.role = role
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if !sameOrigin(r) || !csrfOK(ss, r.Header.Get(CSRFHeader)) {
			c.log.Warn("console: refused a state-changing request without a valid CSRF token or from another origin",
				logkey.Method, r.Method, logkey.Route, r.URL.Path, logkey.Remote, r.RemoteAddr)
			writeError(w, http.StatusForbidden, "missing or wrong CSRF token, or a request from another site")
			return nil
		}
	}
	return ss
}

func (c *Console) handleWhoAmI(w http.ResponseWriter, r *http.Request) {
	ss := c.current(w, r)
	if ss == nil {
		return
	}
	writeJSON(w, http.StatusOK, c.info(ss))
}

func (c *Console) handleLogout(w http.ResponseWriter, r *http.Request) {
	ss := c.current(w, r)
	if ss == nil {
		return
	}
	c.sessions.delete(ss.id)
	c.setCookie(w, "", 0)
	writeJSON(w, http.StatusOK, map[string]bool{"signed_out": true})
}

// view guards a console read view with the roles of the API route it is
// built from.
func (c *Console) view(apiPath string, h func(http.ResponseWriter, *http.Request, *session)) http.Handler {
	roles := c.roles[http.MethodGet+" "+apiPath]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss := c.current(w, r)
		if ss == nil {
			return
		}
		if !slices.Contains(roles, ss.role) {
			writeError(w, http.StatusForbidden, "a "+ss.role+" may not read this (needs "+strings.Join(roles, " or ")+")")
			return
		}
		h(w, r, ss)
	})
}

// passThrough hands /console/api/v1/... to the API as /api/v1/... with the
// session's token as the bearer: the API's own middleware authenticates it
// and applies its role table, so the console cannot grant more than the
// token could.
func (c *Console) passThrough(apiHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss := c.current(w, r)
		if ss == nil {
			return
		}
		rest := "/" + strings.TrimPrefix(r.URL.Path, Prefix) // /console/api/v1/x -> /api/v1/x
		if !strings.HasPrefix(rest, api.Prefix+"/") {
			writeError(w, http.StatusNotFound, "the console passes only "+api.Prefix+"/ through")
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		r2.RequestURI = ""
		r2.Header.Del("Cookie")
		r2.Header.Del(CSRFHeader)
		r2.Header.Set("Authorization", "Bearer "+ss.token)
		w.Header().Set("Cache-Control", "no-store")
		apiHandler.ServeHTTP(w, r2)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, api.Error{Error: msg})
}
