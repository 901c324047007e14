package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Bounds on what a sensor may acknowledge with.
const (
	maxAckDetail   = 1024
	maxAckAffected = 1000
)

func (s *Server) commandService(w http.ResponseWriter, r *http.Request) bool {
	if s.commands == nil || s.hub == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "the kill-switch is not configured on this collector")
		return false
	}
	return true
}

func (s *Server) handleIssue(w http.ResponseWriter, r *http.Request) {
	if !s.commandService(w, r) {
		return
	}
	var req api.IssueRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	if req.TTLSeconds < 0 || time.Duration(req.TTLSeconds)*time.Second > killswitch.MaxLifetime {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("ttl_seconds must be from 1 to %d", int(killswitch.MaxLifetime.Seconds())))
		return
	}
	p := principalFrom(r.Context())
	rec, err := s.commands.Issue(r.Context(), "responder:"+p.TokenID, command.Request{
		Action: req.Action, Targets: req.Targets, Params: req.Params, Reason: req.Reason,
		TTL: time.Duration(req.TTLSeconds) * time.Second,
	})
	if !s.commandError(w, r, err) {
		return
	}
	s.m.commandsIssued.WithLabelValues(rec.Action, rec.State).Inc()
	writeJSON(w, http.StatusCreated, api.CommandStatus{Command: wireCommand(rec)})
}

func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request) {
	if !s.commandService(w, r) {
		return
	}
	var req api.ApproveRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	rec, err := s.commands.Approve(r.Context(), r.PathValue("id"), req.Signature)
	if !s.commandError(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, api.CommandStatus{Command: wireCommand(rec)})
}

// commandError answers err and reports whether there was none.
func (s *Server) commandError(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, command.ErrRateLimited):
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, command.ErrInvalid), errors.Is(err, command.ErrBadApproval):
		s.fail(w, r, http.StatusBadRequest, err.Error())
	case errors.Is(err, command.ErrOverBudget):
		s.fail(w, r, http.StatusConflict, err.Error())
	case errors.Is(err, command.ErrNoTargets):
		s.fail(w, r, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, store.ErrUnknownCommand):
		s.fail(w, r, http.StatusNotFound, "no command "+r.PathValue("id"))
	default:
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
	}
	return false
}

func (s *Server) handleCommands(w http.ResponseWriter, r *http.Request) {
	if !s.commandService(w, r) {
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.fail(w, r, http.StatusBadRequest, "limit must be an integer from 1 to 1000")
			return
		}
		limit = n
	}
	recs, err := s.hub.cs.Commands(r.Context(), limit)
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	out := api.CommandsResponse{Commands: make([]api.Command, 0, len(recs))}
	for _, rec := range recs {
		out.Commands = append(out.Commands, wireCommand(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCommand(w http.ResponseWriter, r *http.Request) {
	if !s.commandService(w, r) {
		return
	}
	rec, hosts, err := s.hub.cs.Command(r.Context(), r.PathValue("id"))
	if !s.commandError(w, r, err) {
		return
	}
	out := api.CommandStatus{Command: wireCommand(rec), Hosts: make([]api.CommandHost, 0, len(hosts))}
	for _, h := range hosts {
		ch := api.CommandHost{HostID: h.HostID, State: h.State, Result: h.Result}
		if !h.DeliveredAt.IsZero() {
			ch.DeliveredAt = &h.DeliveredAt
		}
		if !h.AckedAt.IsZero() {
			ch.AckedAt = &h.AckedAt
		}
		out.Hosts = append(out.Hosts, ch)
	}
	writeJSON(w, http.StatusOK, out)
}

func wireCommand(rec store.CommandRecord) api.Command {
	return api.Command{
		ID: rec.ID, Action: rec.Action, Targets: rec.Targets, Issuer: rec.Issuer, Reason: rec.Reason,
		IssuedAt: rec.IssuedAt, NotAfter: rec.NotAfter, State: rec.State, Required: rec.Required, Signed: rec.Signed,
	}
}

// handlePending is the sensors' long-poll: it answers at once when
// commands are waiting for the host, otherwise when one arrives or after
// ?wait seconds with an empty list.
func (s *Server) handlePending(w http.ResponseWriter, r *http.Request) {
	if s.hub == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "the kill-switch is not configured on this collector")
		return
	}
	wait := api.DefaultCommandWait
	if v := r.URL.Query().Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || time.Duration(n)*time.Second > api.MaxCommandWait {
			s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("wait must be an integer from 0 to %d seconds", int(api.MaxCommandWait.Seconds())))
			return
		}
		wait = time.Duration(n) * time.Second
	}
	host := principalFrom(r.Context()).HostID
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	// Wait before looking, so a command stored between the look and the
	// wait is in the hub's next look for every waiting sensor.
	wt := s.hub.wait(host)
	defer s.hub.done(wt)
	cmds, err := s.hub.cs.PendingCommands(r.Context(), host, s.now())
	for err == nil && len(cmds) == 0 {
		select {
		case a := <-wt.answer:
			if a.err != nil {
				// The hub's look failed: look for this host alone.
				cmds, err = s.hub.cs.PendingCommands(r.Context(), host, s.now())
				continue
			}
			cmds = a.cmds
			continue
		case <-ctx.Done():
		case <-s.stopping:
			// The collector is shutting down: answer now so the graceful
			// shutdown does not wait out every sensor's long-poll.
		}
		break
	}
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	if len(cmds) > 0 {
		if len(cmds) > api.MaxPendingCommands {
			cmds = cmds[:api.MaxPendingCommands] // oldest first; the rest with the next poll
		}
		s.m.commandsDelivered.Add(float64(len(cmds)))
		writeJSON(w, http.StatusOK, api.PendingCommandsResponse{Commands: cmds})
		return
	}
	if r.Context().Err() != nil {
		return // the sensor hung up
	}
	writeJSON(w, http.StatusOK, api.PendingCommandsResponse{Commands: []killswitch.Signed{}})
}

func (s *Server) handleAck(w http.ResponseWriter, r *http.Request) {
	if s.hub == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "the kill-switch is not configured on this collector")
		return
	}
	var res killswitch.Result
	if !s.decodeJSON(w, r, &res) {
		return
	}
	switch res.Status {
	case killswitch.StatusOK, killswitch.StatusNoop, killswitch.StatusFailed, killswitch.StatusRefused:
	default:
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("status %q must be ok, noop, failed or refused", res.Status))
		return
	}
	if len(res.Detail) > maxAckDetail || len(res.Affected) > maxAckAffected {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("detail at most %d bytes and affected at most %d entries", maxAckDetail, maxAckAffected))
		return
	}
	host := principalFrom(r.Context()).HostID
	id := r.PathValue("id")
	err := s.hub.cs.AckCommand(r.Context(), id, host, res, s.now())
	if errors.Is(err, store.ErrUnknownCommand) {
		s.fail(w, r, http.StatusNotFound, "command "+id+" is not addressed to host "+host)
		return
	}
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "store unavailable", err)
		return
	}
	s.m.commandAcks.WithLabelValues(res.Status).Inc()
	lvl := slog.LevelInfo
	if res.Status != killswitch.StatusOK && res.Status != killswitch.StatusNoop {
		lvl = slog.LevelWarn
	}
	s.log.Log(r.Context(), lvl, "kill-switch command acknowledged", logkey.Command, id, logkey.HostID, host,
		logkey.Status, res.Status, "detail", res.Detail, "refusal", res.Refusal)
	w.WriteHeader(http.StatusNoContent)
}

// hubPoll is how often a collector looks at the store's command
// generation while sensors wait: commands issued through another
// collector on the same store reach this one's sensors within it.
const hubPoll = 500 * time.Millisecond

// hub answers long-polling sensors when a command may be waiting for
// them. One goroutine polls the store's generation while anyone waits, so
// an idle fleet of long-polls costs one cheap query per hubPoll, not one
// per sensor; and when the generation moves (or a command is issued here),
// one look (store.CommandStore.PendingCommandsFor) finds the commands of
// every waiting sensor, instead of each sensor looking for itself: with
// 10,000 sensors waiting, a wake-up was 10,000 queries at once.
type hub struct {
	cs  store.CommandStore
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	waiters  map[*waiter]struct{}
	gen      int64
	polling  bool
	dirty    bool // a look is due
	sweeping bool // the look's goroutine runs
}

// waiter is one long-poll waiting for its host's commands.
type waiter struct {
	host   string
	answer chan hubAnswer // buffered: the hub never blocks on a waiter
}

// hubAnswer is what the hub found for a waiter: commands, or the error
// of its look (the waiter then looks for itself).
type hubAnswer struct {
	cmds []killswitch.Signed
	err  error
}

func newHub(cs store.CommandStore, log *slog.Logger, now func() time.Time) *hub {
	return &hub{cs: cs, log: log, now: now, waiters: map[*waiter]struct{}{}}
}

// wait registers a long-poll for host; call done once it is answered.
func (h *hub) wait(host string) *waiter {
	w := &waiter{host: host, answer: make(chan hubAnswer, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiters[w] = struct{}{}
	if !h.polling {
		h.polling = true
		go h.poll()
	}
	return w
}

func (h *hub) done(w *waiter) {
	h.mu.Lock()
	delete(h.waiters, w)
	h.mu.Unlock()
}

// Notify looks for every waiting sensor's commands now (a command was
// issued or approved here).
func (h *hub) Notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dirty = true
	if !h.sweeping {
		h.sweeping = true
		go h.sweep()
	}
}

// sweepTimeout bounds one look for every waiting sensor.
const sweepTimeout = 30 * time.Second

// sweep looks up the commands of every waiting sensor in one call to the
// store and hands each waiter its own as soon as the store has read them,
// before it marks them delivered; it runs again while changes came in
// meanwhile. Waiters with nothing keep waiting.
func (h *hub) sweep() {
	for {
		h.mu.Lock()
		if !h.dirty {
			h.sweeping = false
			h.mu.Unlock()
			return
		}
		h.dirty = false
		byHost := make(map[string][]*waiter, len(h.waiters))
		for w := range h.waiters {
			byHost[w.host] = append(byHost[w.host], w)
		}
		h.mu.Unlock()
		if len(byHost) == 0 {
			continue
		}
		hosts := make([]string, 0, len(byHost))
		for host := range byHost {
			hosts = append(hosts, host)
		}
		answered := false
		ctx, cancel := context.WithTimeout(context.Background(), sweepTimeout)
		_, err := h.cs.PendingCommandsFor(ctx, hosts, h.now(), func(found map[string][]killswitch.Signed) {
			answered = true
			for host, ws := range byHost {
				if cmds := found[host]; len(cmds) > 0 {
					answerAll(ws, hubAnswer{cmds: cmds})
				}
			}
		})
		cancel()
		switch {
		case err != nil && answered:
			// The sensors have their commands; only the delivered mark
			// failed, and the next look hands the commands out again.
			h.log.Warn("kill-switch: cannot mark commands delivered", logkey.Error, err)
		case err != nil:
			h.log.Warn("kill-switch: cannot look up the waiting sensors' commands; each looks for itself", logkey.Error, err)
			for _, ws := range byHost {
				answerAll(ws, hubAnswer{err: err})
			}
		}
	}
}

// answerAll hands a to every waiter not answered yet.
func answerAll(ws []*waiter, a hubAnswer) {
	for _, w := range ws {
		select {
		case w.answer <- a:
		default: // answered already by an earlier look
		}
	}
}

func (h *hub) poll() {
	t := time.NewTicker(hubPoll)
	defer t.Stop()
	for range t.C {
		h.mu.Lock()
		if len(h.waiters) == 0 {
			h.polling = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g, err := h.cs.CommandsGeneration(ctx)
		cancel()
		if err != nil {
			h.log.Warn("kill-switch: cannot read the command generation", logkey.Error, err)
			continue
		}
		h.mu.Lock()
		changed := g != h.gen
		h.gen = g
		h.mu.Unlock()
		if changed {
			h.Notify()
		}
	}
}

// NotifyCommands wakes long-polling sensors; the command service calls it
// after a command becomes deliverable.
func (s *Server) NotifyCommands() {
	if s.hub != nil {
		s.hub.Notify()
	}
}
