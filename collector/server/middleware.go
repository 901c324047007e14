package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// principal is the authenticated caller.
type principal struct {
	Role   string
	HostID string // agent credentials only
	// TokenID names the credential in audit records (a prefix of its
	// hash, never the token).
	TokenID string
	// tokenHash is the full hash, for counting enrolment-token uses.
	tokenHash string
}

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// recorder captures what a handler answered, for metrics and logs.
type recorder struct {
	http.ResponseWriter
	status int
	errMsg string
	hostID string // the authenticated agent's host, for the log line
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// observe counts and logs every request, labelled by the matched route
// pattern so unknown paths cannot blow up metric cardinality.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		route := r.Pattern // set by ServeMux on this request
		if route == "" || route == "/" {
			route = "unmatched"
		}
		s.m.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		attrs := []any{
			logkey.Method, r.Method,
			logkey.Route, route,
			logkey.Status, rec.status,
			logkey.Remote, r.RemoteAddr,
			logkey.Duration, time.Since(start),
		}
		if rec.hostID != "" {
			attrs = append(attrs, logkey.HostID, rec.hostID)
		}
		if rec.status >= 400 {
			s.log.Warn("request failed", append(attrs, logkey.Error, rec.errMsg)...)
			return
		}
		s.log.Debug("request", attrs...)
	})
}

// authed wraps h with bearer authentication limited to roles.
func (s *Server) authed(roles []string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			s.m.authFailures.WithLabelValues("missing").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tillwatch"`)
			s.fail(w, r, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <token>)")
			return
		}
		role, hostID, err := s.st.Authenticate(r.Context(), tok)
		var expired *store.TokenExpiredError
		switch {
		case errors.As(err, &expired):
			s.m.authFailures.WithLabelValues("expired").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tillwatch", error="invalid_token", error_description="token expired"`)
			s.fail(w, r, http.StatusUnauthorized, "token expired (at "+expired.At.UTC().Format(time.RFC3339)+
				"); create a new one with `tillwatch-collector token create`")
			return
		case errors.Is(err, store.ErrTokenUsedUp):
			s.m.authFailures.WithLabelValues("used-up").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tillwatch", error="invalid_token", error_description="token used up"`)
			s.fail(w, r, http.StatusUnauthorized, "enrolment token used up; create a new one with `tillwatch-collector token create --role sensor`")
			return
		case errors.Is(err, store.ErrUnknownToken):
			s.m.authFailures.WithLabelValues("unknown").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tillwatch", error="invalid_token"`)
			s.fail(w, r, http.StatusUnauthorized, "unknown token")
			return
		case err != nil:
			s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
			return
		}
		if !slices.Contains(roles, role) {
			s.m.authFailures.WithLabelValues("forbidden").Inc()
			s.fail(w, r, http.StatusForbidden, "a "+role+" token may not call "+r.Method+" "+r.URL.Path+" (needs "+strings.Join(roles, " or ")+")")
			return
		}
		if rec, ok := w.(*recorder); ok {
			rec.hostID = hostID
		}
		hash := store.HashToken(tok)
		ctx := context.WithValue(r.Context(), principalKey{}, principal{Role: role, HostID: hostID, TokenID: store.TokenID(hash), tokenHash: hash})
		h(w, r.WithContext(ctx))
	}
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The client may be gone; nothing useful to do with the error.
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers an api.Error with a one-line message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	msg = strings.ReplaceAll(msg, "\n", "; ")
	if rec, ok := w.(*recorder); ok {
		rec.errMsg = msg
	}
	writeJSON(w, status, api.Error{Error: msg})
}

// failErr logs the internal error and answers msg without internals.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	s.log.Error(msg, logkey.Route, r.URL.Path, logkey.Error, err)
	s.fail(w, r, status, msg)
}
