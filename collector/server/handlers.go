package server

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/ingest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Field limits for enrolment.
const (
	maxNameLen   = 256
	maxLabels    = 64
	maxLabelLen  = 256
	maxHealthLen = 64
)

// decodeJSON reads a bounded JSON body into v. Unknown fields are allowed so
// newer sensors can talk to an older collector.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxJSONBody))
			return false
		}
		s.fail(w, r, http.StatusBadRequest, "body is not valid JSON: "+err.Error())
		return false
	}
	return true
}

// checkField validates a short identifier-like field.
func checkField(name, v string, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("%s is required", name)
		}
		return nil
	}
	if len(v) > maxNameLen {
		return fmt.Errorf("%s longer than %d bytes", name, maxNameLen)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s contains non-printable characters", name)
		}
	}
	return nil
}

func checkMap(name string, m map[string]string, maxEntries int) error {
	if len(m) > maxEntries {
		return fmt.Errorf("%s has more than %d entries", name, maxEntries)
	}
	for k, v := range m {
		if err := checkField(name+" key", k, true); err != nil {
			return err
		}
		if len(v) > maxLabelLen {
			return fmt.Errorf("%s.%s longer than %d bytes", name, k, maxLabelLen)
		}
	}
	return nil
}

// Host keys the collector accepts: 32 random bytes in any printable
// encoding at least, and short.
const (
	minHostKeyLen = 32
	maxHostKeyLen = 256
)

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	errs := []error{
		checkField("host_id", req.HostID, true),
		checkField("host_name", req.HostName, true),
		checkField("os", req.OS, false),
		checkField("agent_version", req.AgentVersion, false),
		checkMap("labels", req.Labels, maxLabels),
		checkField("host_key", req.HostKey, true),
	}
	if n := len(req.HostKey); n > 0 && (n < minHostKeyLen || n > maxHostKeyLen) {
		errs = append(errs, fmt.Errorf("host_key must be %d to %d bytes (a sensor generates it once)", minHostKeyLen, maxHostKeyLen))
	}
	if err := errors.Join(errs...); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	p := principalFrom(r.Context())
	by := store.Enroller{}
	switch p.Role {
	case api.RoleAgent:
		// A renewal: the host's own credential, for its own host only.
		by.Renewal = true
	case api.RoleSensor:
		by.TokenHash = p.tokenHash
		// A host-specific enrolment token may re-bind its host (a
		// reinstalled till) and nothing else.
		by.Rebind = p.HostID != ""
	}
	if p.HostID != "" && req.HostID != p.HostID {
		s.fail(w, r, http.StatusForbidden, "this credential may only enrol host "+p.HostID)
		return
	}
	if s.credentialTTL > 0 {
		by.CredentialExpires = s.now().Add(s.credentialTTL).UTC()
	}
	resp, err := s.st.Enroll(r.Context(), req, by)
	switch {
	case errors.Is(err, store.ErrHostKeyMismatch):
		s.enrolConflict(r, req)
		s.fail(w, r, http.StatusConflict, "host "+req.HostID+" is enrolled with another host key; "+
			"if this till was reinstalled, enrol it with a token from `tillwatch-collector token create --role sensor --host "+req.HostID+"`")
		return
	case errors.Is(err, store.ErrTokenUsedUp), errors.Is(err, store.ErrUnknownToken):
		s.m.authFailures.WithLabelValues("used-up").Inc()
		s.fail(w, r, http.StatusUnauthorized, "enrolment token used up or revoked; create a new one with `tillwatch-collector token create --role sensor`")
		return
	case err != nil:
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable; enrolment not recorded", err)
		return
	}
	s.m.enrolments.Inc()
	s.log.Info("host enrolled", logkey.HostID, resp.HostID, logkey.AgentID, resp.AgentID, logkey.Remote, r.RemoteAddr,
		"renewal", by.Renewal, "rebind", by.Rebind)
	if s.commands != nil {
		resp.CommandKeys = s.commands.PinnedKeys()
	}
	writeJSON(w, http.StatusOK, resp)
}

// enrolConflict raises the alert for a refused claim of an enrolled host
// id: the store refused it, the SOC must hear of it.
func (s *Server) enrolConflict(r *http.Request, req api.EnrollRequest) {
	s.m.enrolConflicts.Inc()
	s.log.Warn("refused an enrolment with another host key: another machine claims this host id",
		logkey.HostID, req.HostID, logkey.Remote, r.RemoteAddr)
	host := api.Host{HostID: req.HostID, HostName: req.HostName}
	if hosts, err := s.st.Hosts(r.Context()); err == nil {
		for _, h := range hosts {
			if h.HostID == req.HostID {
				host = h // the real host's identity, not the claimant's
			}
		}
	}
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		remote = r.RemoteAddr
	}
	a := watchdog.EnrolConflict(host, remote, s.now())
	if _, err := watchdog.Raise(r.Context(), s.st, []event.Event{a}, s.now()); err != nil {
		s.log.Warn("cannot store the enrolment-conflict alert", logkey.HostID, req.HostID, logkey.Error, err)
	}
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !s.admit(r.Context()) {
		s.m.throttled.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(1+rand.N(5)))
		s.fail(w, r, http.StatusTooManyRequests, "collector busy storing other batches; retry after the indicated seconds")
		return
	}
	defer func() { <-s.ingestSlots }()
	p := principalFrom(r.Context())
	// gzip never grows data by more than a few bytes per 32 KiB block, so
	// the compressed body needs only a little headroom over the decoded cap.
	body := io.Reader(http.MaxBytesReader(w, r.Body, api.MaxBatchBytes+64<<10))
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			if s.tooLarge(w, r, err) {
				return
			}
			s.fail(w, r, http.StatusBadRequest, "body is not valid gzip: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	default:
		s.fail(w, r, http.StatusUnsupportedMediaType, "unsupported Content-Encoding "+enc+"; send gzip or nothing")
		return
	}
	// The decoded limit is what stops a gzip bomb: reading stops one byte
	// past the cap, however much the compressed body would expand to.
	res, err := ingest.ParseBatch(io.LimitReader(body, api.MaxBatchBytes+1), p.HostID, s.now())
	switch {
	case errors.Is(err, ingest.ErrEmpty):
		s.fail(w, r, http.StatusBadRequest, "empty batch: send one ECS JSON event per line")
		return
	case errors.Is(err, ingest.ErrTooLarge), errors.Is(err, ingest.ErrTooManyEvents):
		s.fail(w, r, http.StatusRequestEntityTooLarge, err.Error()+"; split the batch")
		return
	case err != nil:
		if s.tooLarge(w, r, err) {
			return
		}
		s.fail(w, r, http.StatusBadRequest, "unreadable body: "+err.Error())
		return
	}
	resp := api.IngestResponse{Rejected: res.Rejected}
	if len(res.Docs) > 0 {
		resp.Accepted, resp.Duplicates, err = s.st.Ingest(r.Context(), res.Docs)
		if err != nil {
			s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable; retry the batch", err)
			return
		}
	}
	s.trackSequences(r.Context(), p.HostID, res.Docs)
	if s.observer != nil && len(res.Docs) > 0 {
		s.observer.Observe(res.Docs)
	}
	s.m.ingested.WithLabelValues("accepted").Add(float64(resp.Accepted))
	s.m.ingested.WithLabelValues("duplicate").Add(float64(resp.Duplicates))
	s.m.ingested.WithLabelValues("rejected").Add(float64(len(resp.Rejected)))
	if len(resp.Rejected) > 0 {
		first := resp.Rejected[0]
		s.log.Warn("rejected events from sensor", logkey.HostID, p.HostID, logkey.Count, len(resp.Rejected),
			"first_line", first.Line, logkey.Reason, first.Error)
	}
	writeJSON(w, http.StatusOK, resp)
}

// tooLarge answers 413 if err comes from the body limit.
func (s *Server) tooLarge(w http.ResponseWriter, r *http.Request, err error) bool {
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) {
		return false
	}
	s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit))
	return true
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	var hb api.Heartbeat
	if !s.decodeJSON(w, r, &hb) {
		return
	}
	if hb.HostID == "" {
		hb.HostID = p.HostID
	}
	if hb.HostID != p.HostID {
		s.fail(w, r, http.StatusForbidden, "host_id does not match the credential's host")
		return
	}
	if err := errors.Join(
		checkField("host_name", hb.HostName, false),
		checkField("agent_version", hb.AgentVersion, false),
		checkField("mode", hb.Mode, false),
		checkField("config_version", hb.ConfigVersion, false),
		checkField("rules_version", hb.RulesVersion, false),
		checkMap("health", hb.Health, maxHealthLen),
	); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	err := s.st.Heartbeat(r.Context(), p.HostID, hb)
	switch {
	case errors.Is(err, store.ErrUnknownHost):
		s.fail(w, r, http.StatusForbidden, "host not enrolled; enrol again")
		return
	case err != nil:
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{
		ServerTime:      s.now().UTC(),
		IntervalSeconds: int(s.interval / time.Second),
		RulesSerial:     s.rulesSerial(),
	})
}

// alertsBody is api.AlertsResponse with the stored documents passed
// through unparsed.
type alertsBody struct {
	Alerts []json.RawMessage `json:"alerts"`
}

func (s *Server) handleAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AlertFilter{HostID: q.Get("host"), RuleID: q.Get("rule")}
	if v := q.Get("since"); v != "" {
		since, err := ParseSince(v, s.now())
		if err != nil {
			s.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		f.Since = since
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxAlertLimit {
			s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", store.MaxAlertLimit))
			return
		}
		f.Limit = n
	}
	docs, err := s.st.QueryAlerts(r.Context(), f)
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	writeJSON(w, http.StatusOK, alertsBody{Alerts: docs})
}

// ParseSince accepts an RFC 3339 time or a Go duration ("15m", "24h")
// counted back from now.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since %q is neither an RFC 3339 time nor a positive duration like 15m", v)
	}
	return now.Add(-d), nil
}

func (s *Server) handleHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := s.st.Hosts(r.Context())
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	writeJSON(w, http.StatusOK, api.HostsResponse{Hosts: hosts})
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(api.OpenAPI)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.st.Ping(ctx); err != nil {
		s.log.Warn("health check failed", logkey.Error, err)
		if rec, ok := w.(*recorder); ok {
			rec.errMsg = err.Error()
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store does not answer"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsHandler.ServeHTTP(w, r)
}

// trackSequences records the batch's event.sequence numbers and raises an
// alert for every gap, when the store keeps sequences. The batch is already
// stored: a failure here is logged, never turned into a failed ingest.
func (s *Server) trackSequences(ctx context.Context, hostID string, docs []store.Doc) {
	tr, ok := s.st.(store.SequenceTracker)
	if !ok || len(docs) == 0 {
		return
	}
	seqs := make([]int64, 0, len(docs))
	for _, d := range docs {
		seqs = append(seqs, d.Sequence)
	}
	gaps, err := tr.TrackSequences(ctx, hostID, seqs)
	if err != nil {
		s.log.Warn("cannot track event sequences", logkey.HostID, hostID, logkey.Error, err)
		return
	}
	if len(gaps) == 0 {
		return
	}
	host := api.Host{HostID: hostID}
	if hosts, err := s.st.Hosts(ctx); err == nil {
		for _, h := range hosts {
			if h.HostID == hostID {
				host = h
			}
		}
	}
	alerts := make([]event.Event, 0, len(gaps))
	for _, g := range gaps {
		alerts = append(alerts, watchdog.EventsLost(host, g, s.now()))
		s.log.Warn("sensor lost events", logkey.HostID, hostID, "from", g.From, "to", g.To)
	}
	if _, err := watchdog.Raise(ctx, s.st, alerts, s.now()); err != nil {
		s.log.Warn("cannot store the events-lost alert", logkey.HostID, hostID, logkey.Error, err)
	}
}

// admit takes an ingest slot, waiting at most ingestWait.
func (s *Server) admit(ctx context.Context) bool {
	select {
	case s.ingestSlots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.ingestWait)
	defer t.Stop()
	select {
	case s.ingestSlots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}
