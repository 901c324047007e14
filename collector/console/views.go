// The console's page handlers: each page is a read of the store, a view model and a template, kept side
// by side in one file (about 500 lines) so that the pages read alike and share their helpers.

package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// Bounds of the console's queries, so a page costs the same on a fleet of
// ten tills and one of ten thousand.
const (
	// stateCommandScan is how many of the newest commands the stores page
	// reads for isolation and RMM state.
	stateCommandScan = 200
	// alertPage is the alerts list's page size (at most maxAlertPage).
	alertPage    = 50
	maxAlertPage = 500
	// hostAlerts, hostHealth and hostCommands bound a host's timeline.
	hostAlerts   = 200
	hostHealth   = 100
	hostCommands = 100
)

// DefaultGroupLabel groups tills into stores.
const DefaultGroupLabel = "store"

// tillView is one till on the stores page.
type tillView struct {
	HostID   string            `json:"host_id"`
	HostName string            `json:"host_name"`
	State    string            `json:"state"`
	States   []string          `json:"states"`
	LastSeen time.Time         `json:"last_seen"`
	Alerts   int               `json:"alerts_recent"`
	Version  string            `json:"agent_version"`
	Mode     string            `json:"mode,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

type groupView struct {
	Name   string         `json:"name"`
	Counts map[string]int `json:"counts"`
	Tills  []tillView     `json:"tills"`
}

type storesView struct {
	Label        string         `json:"label"`
	Labels       []string       `json:"labels"`
	States       []string       `json:"states"`
	Counts       map[string]int `json:"counts"`
	Total        int            `json:"total"`
	Groups       []groupView    `json:"groups"`
	GeneratedAt  time.Time      `json:"generated_at"`
	Window       string         `json:"window"`
	SilenceAfter string         `json:"silence_after"`
}

// fleetStates derives every till's facts and states: the hosts as stored,
// the alert window's tally per host (an aggregate query, cached; see
// tallyCache) and the newest commands' acknowledgements. The three reads
// do not depend on each other and run at once: a load waits for the
// slowest, not for their sum (on Elasticsearch each is a round trip or
// two to a node that may be busy).
func (c *Console) fleetStates(ctx context.Context) ([]api.Host, map[string]facts, error) {
	var (
		wg               sync.WaitGroup
		hosts            []api.Host
		tally            map[string]store.AlertTally
		tgs              map[string]*hostToggle
		hErr, tErr, gErr error
	)
	wg.Go(func() { hosts, hErr = c.ov.HostList(ctx) })
	wg.Go(func() { tally, tErr = c.tally.get(ctx, c.now()) })
	wg.Go(func() { tgs, gErr = c.toggles(ctx, "") })
	wg.Wait()
	if err := errors.Join(hErr, tErr, gErr); err != nil {
		return nil, nil, err
	}
	fs := make(map[string]facts, len(hosts))
	for _, h := range hosts {
		t := tally[h.HostID]
		fs[h.HostID] = facts{Host: h, Alerts: t.Alerts, Unstopped: t.Unstopped}
	}
	for id, tg := range tgs {
		if f, ok := fs[id]; ok {
			f.Isolated, f.RMMDisabled = tg.isolated, tg.rmmOff
			fs[id] = f
		}
	}
	return hosts, fs, nil
}

// toggles reads the newest commands' acknowledgements: each till's latest
// successful isolate/release and disable/enable RMM. host limits it to one
// till ("" for all).
func (c *Console) toggles(ctx context.Context, host string) (map[string]*hostToggle, error) {
	out := map[string]*hostToggle{}
	cs, ok := c.st.(store.CommandStore)
	if !ok {
		return out, nil
	}
	recs, err := cs.Commands(ctx, stateCommandScan)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, rec := range recs {
		if _, ok := toggles[rec.Action]; ok && rec.State == store.CommandActive {
			ids = append(ids, rec.ID)
		}
	}
	hostsOf, err := c.ov.CommandHosts(ctx, ids, host)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		for _, h := range hostsOf[rec.ID] { // only the toggles asked for
			if h.State != store.HostAcked || h.Result == nil || (h.Result.Status != "ok" && h.Result.Status != "noop") {
				continue
			}
			tg := out[h.HostID]
			if tg == nil {
				tg = &hostToggle{}
				out[h.HostID] = tg
			}
			tg.apply(rec.Action, h.AckedAt)
		}
	}
	return out, nil
}

func (c *Console) handleStores(w http.ResponseWriter, r *http.Request, _ *session) {
	q := r.URL.Query()
	label := q.Get("label")
	if label == "" {
		label = DefaultGroupLabel
	}
	wantValue, wantState := q.Get("value"), q.Get("state")
	if wantState != "" && !slices.Contains(States, wantState) {
		writeError(w, http.StatusBadRequest, "state must be one of "+strings.Join(States, ", "))
		return
	}
	hosts, fs, err := c.fleetStates(r.Context())
	if err != nil {
		c.storeError(w, err)
		return
	}
	now := c.now()
	out := storesView{
		Label: label, States: States, Counts: map[string]int{}, GeneratedAt: now,
		Window: c.window.String(), SilenceAfter: c.silence.String(),
	}
	labelSet := map[string]bool{}
	groups := map[string]*groupView{}
	for _, h := range hosts {
		for k := range h.Labels {
			labelSet[k] = true
		}
		name, ok := h.Labels[label]
		if !ok {
			name = "(no " + label + ")"
		}
		if wantValue != "" && name != wantValue {
			continue
		}
		f := fs[h.HostID]
		states := deriveStates(f, now, c.silence)
		if wantState != "" && !slices.Contains(states, wantState) {
			continue
		}
		g := groups[name]
		if g == nil {
			g = &groupView{Name: name, Counts: map[string]int{}}
			groups[name] = g
		}
		g.Counts[states[0]]++
		out.Counts[states[0]]++
		out.Total++
		g.Tills = append(g.Tills, tillView{
			HostID: h.HostID, HostName: h.HostName, State: states[0], States: states, LastSeen: h.LastSeen,
			Alerts: f.Alerts, Version: h.AgentVersion, Mode: h.Mode, Labels: h.Labels,
		})
	}
	for k := range labelSet {
		out.Labels = append(out.Labels, k)
	}
	sort.Strings(out.Labels)
	out.Groups = make([]groupView, 0, len(groups))
	for _, g := range groups {
		out.Groups = append(out.Groups, *g)
	}
	// Stores needing attention first, then by name.
	sort.Slice(out.Groups, func(i, j int) bool {
		ai, aj := attention(out.Groups[i]), attention(out.Groups[j])
		if ai != aj {
			return ai > aj
		}
		return out.Groups[i].Name < out.Groups[j].Name
	})
	writeJSON(w, http.StatusOK, out)
}

// attention counts a store's tills that are not protected.
func attention(g groupView) int {
	return len(g.Tills) - g.Counts[StateProtected]
}

// alertRow is one line of the alerts list.
type alertRow struct {
	ID        string    `json:"id"`
	Timestamp time.Time `json:"timestamp"`
	HostID    string    `json:"host_id"`
	HostName  string    `json:"host_name"`
	RuleID    string    `json:"rule_id"`
	RuleName  string    `json:"rule_name"`
	Severity  int       `json:"severity"`
	Process   string    `json:"process,omitempty"`
	Response  string    `json:"response,omitempty"`
	Stopped   bool      `json:"stopped"`
}

type alertsView struct {
	Alerts []alertRow `json:"alerts"`
	// Next is the "before" value of the next page; empty on the last.
	Next string `json:"next,omitempty"`
}

func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	// <input type="datetime-local"> sends no zone: read it as UTC, which
	// the page says.
	return time.Parse("2006-01-02T15:04", v)
}

func (c *Console) handleAlerts(w http.ResponseWriter, r *http.Request, _ *session) {
	q := r.URL.Query()
	f := store.AlertFilter{RuleID: q.Get("rule"), HostID: q.Get("host"), Limit: alertPage}
	var errs []string
	var err error
	if f.Since, err = parseTime(q.Get("since")); err != nil {
		errs = append(errs, "since must be a time like 2026-01-02T15:04 (UTC)")
	}
	if f.Until, err = parseTime(q.Get("until")); err != nil {
		errs = append(errs, "until must be a time like 2026-01-02T15:04 (UTC)")
	}
	if v := q.Get("before"); v != "" {
		b, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			errs = append(errs, "before must be an RFC 3339 time")
		} else if f.Until.IsZero() || b.Before(f.Until) {
			f.Until = b
		}
	}
	if v := q.Get("severity"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			errs = append(errs, "severity must be a number from 0 to 100")
		}
		f.MinSeverity = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAlertPage {
			errs = append(errs, fmt.Sprintf("limit must be from 1 to %d", maxAlertPage))
		}
		f.Limit = n
	}
	if len(errs) > 0 {
		writeError(w, http.StatusBadRequest, strings.Join(errs, "; "))
		return
	}
	if v := q.Get("store"); v != "" {
		label := q.Get("label")
		if label == "" {
			label = DefaultGroupLabel
		}
		hosts, err := c.ov.HostList(r.Context())
		if err != nil {
			c.storeError(w, err)
			return
		}
		for _, h := range hosts {
			if h.Labels[label] == v {
				f.HostIDs = append(f.HostIDs, h.HostID)
			}
		}
		if len(f.HostIDs) == 0 {
			writeJSON(w, http.StatusOK, alertsView{Alerts: []alertRow{}})
			return
		}
	}
	raws, err := c.st.QueryAlerts(r.Context(), f)
	if err != nil {
		c.storeError(w, err)
		return
	}
	out := alertsView{Alerts: make([]alertRow, 0, len(raws))}
	for _, raw := range raws {
		a, err := parseAlert(raw)
		if err != nil {
			continue
		}
		out.Alerts = append(out.Alerts, row(a))
	}
	if len(raws) == f.EffectiveLimit() && len(out.Alerts) > 0 {
		out.Next = out.Alerts[len(out.Alerts)-1].Timestamp.Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, out)
}

func row(a alertLite) alertRow {
	ar := alertRow{ID: a.Event.ID, Timestamp: a.Timestamp, HostID: a.Host.ID, HostName: a.Host.Name,
		Severity: a.Event.Severity, Stopped: a.stopped()}
	if a.Rule != nil {
		ar.RuleID, ar.RuleName = a.Rule.ID, a.Rule.Name
	}
	if a.Process != nil {
		ar.Process = a.Process.Name
	}
	if a.Tillwatch != nil && a.Tillwatch.Response != nil {
		ar.Response = a.Tillwatch.Response.Action + ": " + a.Tillwatch.Response.Result
	}
	return ar
}

func (c *Console) handleAlert(w http.ResponseWriter, r *http.Request, _ *session) {
	id := r.URL.Query().Get("id")
	if id == "" || len(id) > 128 {
		writeError(w, http.StatusBadRequest, "id is required")
		return
	}
	raws, err := c.st.QueryAlerts(r.Context(), store.AlertFilter{EventID: id, Limit: 1})
	if err != nil {
		c.storeError(w, err)
		return
	}
	if len(raws) == 0 {
		writeError(w, http.StatusNotFound, "no alert "+id)
		return
	}
	// The document as stored; the page draws it.
	writeJSON(w, http.StatusOK, map[string]json.RawMessage{"alert": raws[0]})
}

// timelineEntry is one line of a host's timeline.
type timelineEntry struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // alert, health, command, ack
	Text   string    `json:"text"`
	Link   string    `json:"link,omitempty"` // "alert:<id>" or "command:<id>"
	Status string    `json:"status,omitempty"`
}

type hostView struct {
	Host     api.Host        `json:"host"`
	States   []string        `json:"states"`
	Timeline []timelineEntry `json:"timeline"`
}

func (c *Console) handleHost(w http.ResponseWriter, r *http.Request, _ *session) {
	id := r.URL.Query().Get("id")
	if id == "" {
		writeError(w, http.StatusBadRequest, "id is required")
		return
	}
	// One host by its id, not the fleet's listing: on Elasticsearch that
	// listing counted every stored alert per host to show one. The host,
	// its alerts, its health changes and the commands are independent
	// reads and run at once.
	var (
		wg                     sync.WaitGroup
		host                   api.Host
		raws, healths          []json.RawMessage
		recs                   []store.CommandRecord
		hostsOf                map[string][]store.CommandHost
		hErr, aErr, eErr, cErr error
	)
	cs, isCS := c.st.(store.CommandStore)
	wg.Go(func() { host, hErr = c.ov.Host(r.Context(), id) })
	wg.Go(func() { raws, aErr = c.st.QueryAlerts(r.Context(), store.AlertFilter{HostID: id, Limit: hostAlerts}) })
	wg.Go(func() { healths, eErr = c.ov.HealthEvents(r.Context(), id, hostHealth) })
	if isCS {
		wg.Go(func() {
			if recs, cErr = cs.Commands(r.Context(), hostCommands); cErr != nil {
				return
			}
			ids := make([]string, 0, len(recs))
			for _, rec := range recs {
				ids = append(ids, rec.ID)
			}
			hostsOf, cErr = c.ov.CommandHosts(r.Context(), ids, id)
		})
	}
	wg.Wait()
	if errors.Is(hErr, store.ErrUnknownHost) {
		writeError(w, http.StatusNotFound, "no host "+id)
		return
	}
	if err := errors.Join(hErr, aErr, eErr, cErr); err != nil {
		c.storeError(w, err)
		return
	}
	now := c.now()
	f := facts{Host: host}
	var tl []timelineEntry
	for _, raw := range raws {
		a, err := parseAlert(raw)
		if err != nil {
			continue
		}
		kind, rw := "alert", row(a)
		if a.integrity() {
			kind = "health"
		} else if now.Sub(a.Timestamp) <= c.window {
			f.Alerts++
			if !a.stopped() {
				f.Unstopped++
			}
		}
		text := rw.RuleID + " " + rw.RuleName
		if rw.Process != "" {
			text += " (" + rw.Process + ")"
		}
		if rw.Response != "" {
			text += " — " + rw.Response
		}
		tl = append(tl, timelineEntry{Time: a.Timestamp, Kind: kind, Text: text, Link: "alert:" + rw.ID})
	}
	for _, raw := range healths {
		if e, ok := healthEntry(raw); ok {
			tl = append(tl, e)
		}
	}
	if isCS {
		tg := &hostToggle{}
		for _, rec := range recs {
			chs := hostsOf[rec.ID]
			if len(chs) == 0 {
				continue
			}
			ch := chs[0]
			tl = append(tl, timelineEntry{Time: rec.IssuedAt, Kind: "command", Link: "command:" + rec.ID, Status: rec.State,
				Text: rec.Action + " issued by " + rec.Issuer + reasonSuffix(rec.Reason)})
			if ch.State == store.HostAcked && ch.Result != nil {
				tl = append(tl, timelineEntry{Time: ch.AckedAt, Kind: "ack", Link: "command:" + rec.ID, Status: ch.Result.Status,
					Text: rec.Action + " acknowledged: " + ch.Result.Status + detailSuffix(ch.Result)})
				if rec.State == store.CommandActive && (ch.Result.Status == "ok" || ch.Result.Status == "noop") {
					tg.apply(rec.Action, ch.AckedAt)
				}
			}
		}
		f.Isolated, f.RMMDisabled = tg.isolated, tg.rmmOff
	}
	sort.SliceStable(tl, func(i, j int) bool { return tl[i].Time.After(tl[j].Time) })
	if tl == nil {
		tl = []timelineEntry{}
	}
	writeJSON(w, http.StatusOK, hostView{Host: host, States: deriveStates(f, now, c.silence), Timeline: tl})
}

// healthDoc is the part of a health document (a sensor component changing
// state) the timeline shows.
type healthDoc struct {
	Timestamp time.Time `json:"@timestamp"`
	Message   string    `json:"message"`
	Event     struct {
		Reason string `json:"reason"`
	} `json:"event"`
	Tillwatch *struct {
		Health *event.Health `json:"health"`
	} `json:"tillwatch"`
}

// healthEntry turns a health document into a timeline entry; false for a
// document that names no component.
func healthEntry(raw json.RawMessage) (timelineEntry, bool) {
	var d healthDoc
	if err := json.Unmarshal(raw, &d); err != nil || d.Tillwatch == nil || d.Tillwatch.Health == nil || d.Tillwatch.Health.Component == "" {
		return timelineEntry{}, false
	}
	h := d.Tillwatch.Health
	text := h.Component + " " + h.State
	if d.Event.Reason != "" {
		text += ": " + d.Event.Reason
	}
	return timelineEntry{Time: d.Timestamp, Kind: "health", Text: text, Status: h.State}, true
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func detailSuffix(r *killswitch.Result) string {
	if r.Detail == "" {
		return ""
	}
	return " (" + r.Detail + ")"
}

func (c *Console) storeError(w http.ResponseWriter, err error) {
	c.log.Error("console: store query failed", "error", err)
	writeError(w, http.StatusServiceUnavailable, "store unavailable")
}
