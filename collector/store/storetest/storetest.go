// Long (about 1,150 lines) on purpose: one suite is the contract every backend passes; split, it would read as several.

// Package storetest is the behaviour every store.Store backend must share:
// one suite that runs against SQLite and Elasticsearch alike, so the queries
// behind the API and the CLI answer the same on both.
//
// A backend's test calls Run with a function that opens a fresh, empty
// store on the clock it is given (and registers its cleanup on t). The suite only uses the
// store.Store interface (and store.SequenceTracker when implemented); it
// never looks at a backend's tables or indices.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// Opener returns a fresh, empty store for one test whose clock is now (the
// backend's Options.Now); it registers closing and removal on t itself.
type Opener func(t *testing.T, now func() time.Time) store.Store

// clock is real time shifted by an offset a test can advance, so stores
// agree with time.Now until a test moves time on.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// timeout bounds every call in the suite so a hung backend fails the test
// instead of the whole package timing out.
const timeout = 60 * time.Second

// Run runs the shared suite. Subtests run in parallel, each on its own
// store.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
		clk  func(t *testing.T, s store.Store, clk *clock)
	}{
		{name: "Tokens", fn: testTokens},
		{name: "TokensExpire", clk: testTokenExpiry},
		{name: "EnrollKeepsAgentIDAndRevokesOldCredential", fn: testEnroll},
		{name: "IngestDeduplicates", fn: testIngestDedup},
		{name: "IngestMarksSensorHostsSeen", fn: testIngestSeen},
		{name: "ConcurrentIngestStoresEachEventOnce", fn: testConcurrentIngest},
		{name: "Heartbeat", fn: testHeartbeat},
		{name: "QueryAlerts", fn: testQueryAlerts},
		{name: "QueryAlertsOrdersTiesByEventID", fn: testQueryAlertTies},
		{name: "HostsCountAlerts", fn: testHostsAlertCount},
		{name: "OverviewTalliesAlertsAndListsHealth", fn: testOverview},
		{name: "Sequences", fn: testSequences},
		{name: "Commands", fn: testCommands},
		{name: "PendingCommandsForManyHostsAtOnce", fn: testPendingFor},
		{name: "ConcurrentApprovalsLoseNoSignature", fn: testConcurrentApprovals},
		{name: "EnrolAsAnotherHostIsRefused", fn: testHostBound},
		{name: "EnrolmentTokenUsesAreBounded", fn: testTokenUses},
		{name: "TokensListAndRevoke", fn: testTokensListRevoke},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := &clock{}
			s := open(t, clk.Now)
			if tc.clk != nil {
				tc.clk(t, s, clk)
				return
			}
			tc.fn(t, s)
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Alert builds a valid alert document as the ingest layer hands it over.
func Alert(id, host, rule string, ts time.Time) store.Doc {
	doc, _ := json.Marshal(map[string]any{ // plain maps always marshal
		"@timestamp": ts.UTC().Format(time.RFC3339Nano),
		"event":      map[string]any{"id": id, "kind": "alert", "severity": 70, "dataset": "tillwatch.alerts"},
		"host":       map[string]any{"id": host, "name": host},
		"rule":       map[string]any{"id": rule, "name": "rule " + rule, "ruleset": "rmm"},
	})
	return store.Doc{EventID: id, Kind: "alert", Dataset: "tillwatch.alerts", HostID: host, Timestamp: ts,
		Ingested: time.Now(), RuleID: rule, Ruleset: "rmm", Severity: 70, JSON: doc}
}

// Telemetry builds a non-alert (process telemetry) document.
func Telemetry(id, host string, ts time.Time) store.Doc {
	doc, _ := json.Marshal(map[string]any{
		"@timestamp": ts.UTC().Format(time.RFC3339Nano),
		"event":      map[string]any{"id": id, "kind": "event", "dataset": "tillwatch.process"},
		"host":       map[string]any{"id": host, "name": host},
		"process":    map[string]any{"pid": 42, "name": "sh"},
	})
	return store.Doc{EventID: id, Kind: "event", Dataset: "tillwatch.process", HostID: host, Timestamp: ts,
		Ingested: time.Now(), JSON: doc}
}

func enroll(t *testing.T, s store.Store, host string) api.EnrollResponse {
	t.Helper()
	r, err := s.Enroll(ctxFor(t), api.EnrollRequest{HostID: host, HostName: "name-" + host, OS: "linux", AgentVersion: "1.0"}, store.Enroller{})
	if err != nil {
		t.Fatalf("Enroll(%s): %v", host, err)
	}
	return r
}

func testTokens(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	tests := []struct {
		role, host string
		wantErr    bool
	}{
		{api.RoleSensor, "", false},
		{api.RoleAnalyst, "", false},
		{api.RoleResponder, "", false},
		{api.RoleAgent, "h1", false},
		{api.RoleAgent, "", true},
		{api.RoleAnalyst, "h1", true},
		{"admin", "", true},
	}
	for _, tt := range tests {
		tok, err := s.CreateToken(ctx, tt.role, tt.host, time.Time{}, 0)
		if tt.wantErr {
			if !errors.Is(err, store.ErrInvalidRole) {
				t.Errorf("CreateToken(%q, %q) = %v, want ErrInvalidRole", tt.role, tt.host, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("CreateToken(%q, %q): %v", tt.role, tt.host, err)
		}
		role, host, err := s.Authenticate(ctx, tok)
		if err != nil || role != tt.role || host != tt.host {
			t.Errorf("Authenticate(token of %s/%s) = %q %q %v", tt.role, tt.host, role, host, err)
		}
	}
	good, err := s.CreateToken(ctx, api.RoleAnalyst, "", time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "tw_nope", "nope", good + "x", good[:len(good)-1]} {
		if _, _, err := s.Authenticate(ctx, bad); !errors.Is(err, store.ErrUnknownToken) {
			t.Errorf("Authenticate(%q) = %v, want ErrUnknownToken", bad, err)
		}
	}
}

func testTokenExpiry(t *testing.T, s store.Store, clk *clock) {
	ctx := ctxFor(t)
	start := clk.Now()
	shortExp := start.Add(time.Hour)
	short, err := s.CreateToken(ctx, api.RoleSensor, "", shortExp, 0)
	if err != nil {
		t.Fatal(err)
	}
	long, err := s.CreateToken(ctx, api.RoleAnalyst, "", start.Add(48*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	never, err := s.CreateToken(ctx, api.RoleResponder, "", time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Enrolled with the short-lived token: the agent credential must
	// outlive it (agent credentials never expire).
	if _, _, err := s.Authenticate(ctx, short); err != nil {
		t.Fatalf("Authenticate(unexpired sensor token) = %v", err)
	}
	cred := enroll(t, s, "exp-host").Credential

	clk.Advance(time.Hour + time.Second)
	_, _, err = s.Authenticate(ctx, short)
	if !errors.Is(err, store.ErrTokenExpired) || errors.Is(err, store.ErrUnknownToken) {
		t.Errorf("Authenticate(expired token) = %v, want ErrTokenExpired (not ErrUnknownToken)", err)
	}
	var te *store.TokenExpiredError
	if !errors.As(err, &te) || te.At.Sub(shortExp).Abs() > time.Millisecond {
		t.Errorf("Authenticate(expired token) = %#v, want a *TokenExpiredError at %v", err, shortExp)
	}
	for _, tc := range []struct{ tok, role, host string }{
		{long, api.RoleAnalyst, ""},
		{never, api.RoleResponder, ""},
		{cred, api.RoleAgent, "exp-host"},
	} {
		if role, host, err := s.Authenticate(ctx, tc.tok); err != nil || role != tc.role || host != tc.host {
			t.Errorf("Authenticate(unexpired %s token) = %q %q %v", tc.role, role, host, err)
		}
	}
	// Unknown stays unknown, however much time passes.
	if _, _, err := s.Authenticate(ctx, store.NewToken()); !errors.Is(err, store.ErrUnknownToken) {
		t.Errorf("Authenticate(unknown token) = %v, want ErrUnknownToken", err)
	}

	clk.Advance(100 * 365 * 24 * time.Hour)
	if _, _, err := s.Authenticate(ctx, long); !errors.Is(err, store.ErrTokenExpired) {
		t.Errorf("Authenticate(long token, 100y later) = %v, want ErrTokenExpired", err)
	}
	for _, tok := range []string{never, cred} {
		if _, _, err := s.Authenticate(ctx, tok); err != nil {
			t.Errorf("Authenticate(non-expiring token, 100y later) = %v", err)
		}
	}
}

func testEnroll(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	req := api.EnrollRequest{HostID: "till-1", HostName: "Till 1", OS: "linux", AgentVersion: "1.0",
		Labels: map[string]string{"store": "42"}}
	before := time.Now()
	first, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	if first.AgentID == "" || first.HostID != "till-1" || first.Credential == "" {
		t.Fatalf("first enrolment %+v", first)
	}
	req.AgentVersion = "1.1"
	req.Labels = map[string]string{"store": "43", "lane": "2"}
	second, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	if first.AgentID != second.AgentID {
		t.Errorf("agent id changed on re-enrolment: %s -> %s", first.AgentID, second.AgentID)
	}
	if _, _, err := s.Authenticate(ctx, first.Credential); !errors.Is(err, store.ErrUnknownToken) {
		t.Errorf("credential of the first enrolment still valid: %v", err)
	}
	role, host, err := s.Authenticate(ctx, second.Credential)
	if err != nil || role != api.RoleAgent || host != "till-1" {
		t.Fatalf("new credential: %q %q %v", role, host, err)
	}
	other := enroll(t, s, "till-2")
	if other.AgentID == first.AgentID {
		t.Error("two hosts share an agent id")
	}
	hosts, err := s.Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("Hosts = %+v, %v; want 2 hosts", hosts, err)
	}
	h := hosts[0]
	if h.HostID != "till-1" || h.AgentID != first.AgentID || h.AgentVersion != "1.1" || h.OS != "linux" ||
		h.HostName != "Till 1" || h.Labels["store"] != "43" || h.Labels["lane"] != "2" || len(h.Labels) != 2 {
		t.Errorf("host after re-enrolment: %+v", h)
	}
	// Stores keep at least millisecond precision.
	if h.EnrolledAt.Before(before.Add(-time.Millisecond)) || h.LastSeen.Before(h.EnrolledAt) || h.LastSeen.After(time.Now()) {
		t.Errorf("enrolled_at %v / last_seen %v outside [%v, now]", h.EnrolledAt, h.LastSeen, before)
	}
}

func testIngestDedup(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	enroll(t, s, "h1")
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	batch := []store.Doc{Alert("a1", "h1", "r1", ts), Alert("a2", "h1", "r1", ts.Add(time.Second)), Telemetry("e1", "h1", ts)}
	tests := []struct {
		name          string
		docs          []store.Doc
		wantAcc, wDup int
	}{
		{"first delivery", batch, 3, 0},
		{"replay of the whole batch", batch, 0, 3},
		{"partly new", []store.Doc{Alert("a2", "h1", "r1", ts), Alert("a3", "h1", "r2", ts), Telemetry("e1", "h1", ts)}, 1, 2},
		{"duplicate inside one batch", []store.Doc{Alert("a4", "h1", "r1", ts), Alert("a4", "h1", "r1", ts)}, 1, 1},
		{"empty batch", nil, 0, 0},
	}
	for _, tt := range tests { // sequential: each step builds on the last
		acc, dup, err := s.Ingest(ctx, tt.docs)
		if err != nil || acc != tt.wantAcc || dup != tt.wDup {
			t.Errorf("%s: Ingest = %d accepted, %d duplicates, %v; want %d, %d", tt.name, acc, dup, err, tt.wantAcc, tt.wDup)
		}
	}
	got, err := s.QueryAlerts(ctx, store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if ids := eventIDs(t, got); fmt.Sprint(ids) != "[a2 a4 a3 a1]" {
		// a4, a3 and a1 share a timestamp; the tie breaks by event.id, descending.
		t.Errorf("stored alerts %v, want [a2 a4 a3 a1] (each once, telemetry not among alerts)", ids)
	}
	// The document comes back as sent.
	if want := batch[0].JSON; !jsonEqual(got[3], want) {
		t.Errorf("stored document\n%s\nwant\n%s", got[3], want)
	}
}

func testIngestSeen(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	enroll(t, s, "seen")
	enroll(t, s, "silent")
	base := hostByID(t, s, "silent").LastSeen
	time.Sleep(5 * time.Millisecond) // last_seen has millisecond precision in some stores
	sensorDoc := Telemetry("s1", "seen", time.Now())
	collectorDoc := Alert("c1", "silent", "tillwatch.sensor-silenced", time.Now())
	collectorDoc.Origin = store.OriginCollector
	if _, _, err := s.Ingest(ctx, []store.Doc{sensorDoc, collectorDoc}); err != nil {
		t.Fatal(err)
	}
	if h := hostByID(t, s, "seen"); !h.LastSeen.After(base) {
		t.Errorf("a sensor's event did not advance last_seen: %v", h.LastSeen)
	}
	if h := hostByID(t, s, "silent"); !h.LastSeen.Equal(base) {
		t.Errorf("a collector-raised alert made the host look alive: last_seen %v -> %v", base, h.LastSeen)
	}
}

func testConcurrentIngest(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	enroll(t, s, "h1")
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// 8 writers, each sending 50 alerts of which half overlap the next
	// writer's: 8*25 distinct ids plus the overlap of the last writer.
	const writers, per = 8, 50
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		accepted, dups int
		errs           []error
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var docs []store.Doc
			for i := range per {
				n := w*per/2 + i
				docs = append(docs, Alert(fmt.Sprintf("c%04d", n), "h1", "r1", ts.Add(time.Duration(n)*time.Second)))
			}
			a, d, err := s.Ingest(ctx, docs)
			mu.Lock()
			defer mu.Unlock()
			accepted, dups = accepted+a, dups+d
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent ingest failed: %v", errors.Join(errs...))
	}
	distinct := (writers-1)*per/2 + per
	if accepted != distinct || accepted+dups != writers*per {
		t.Errorf("accepted %d, duplicates %d; want %d accepted of %d sent", accepted, dups, distinct, writers*per)
	}
	got, err := s.QueryAlerts(ctx, store.AlertFilter{Limit: store.MaxAlertLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != distinct {
		t.Errorf("stored %d alerts, want %d", len(got), distinct)
	}
}

func testHeartbeat(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	if err := s.Heartbeat(ctx, "nobody", api.Heartbeat{HostID: "nobody"}); !errors.Is(err, store.ErrUnknownHost) {
		t.Errorf("Heartbeat(unknown host) = %v, want ErrUnknownHost", err)
	}
	enroll(t, s, "h1")
	base := hostByID(t, s, "h1")
	time.Sleep(5 * time.Millisecond)
	steps := []struct {
		hb   api.Heartbeat
		want func(h api.Host) bool
	}{
		{api.Heartbeat{HostID: "h1", AgentVersion: "2.0", Mode: "enforce", HostName: "renamed",
			Health:        map[string]string{"process": "ok", "fileactivity": "degraded"},
			ConfigVersion: "0123456789ab", RulesVersion: "builtin-aaaaaaaaaaaa+bbbbbbbbbbbb"},
			func(h api.Host) bool {
				return h.AgentVersion == "2.0" && h.Mode == "enforce" && h.HostName == "renamed" &&
					h.Health["fileactivity"] == "degraded" && len(h.Health) == 2 &&
					h.ConfigVersion == "0123456789ab" && h.RulesVersion == "builtin-aaaaaaaaaaaa+bbbbbbbbbbbb"
			}},
		// Empty fields keep what is known; health is replaced, not merged.
		{api.Heartbeat{HostID: "h1", Health: map[string]string{"process": "failed"}},
			func(h api.Host) bool {
				return h.AgentVersion == "2.0" && h.Mode == "enforce" && h.HostName == "renamed" &&
					h.Health["process"] == "failed" && len(h.Health) == 1 &&
					h.ConfigVersion == "0123456789ab" && h.RulesVersion == "builtin-aaaaaaaaaaaa+bbbbbbbbbbbb"
			}},
		// A new configuration or rule set replaces the old, each on its own.
		{api.Heartbeat{HostID: "h1", RulesVersion: "builtin-cccccccccccc"},
			func(h api.Host) bool {
				return h.ConfigVersion == "0123456789ab" && h.RulesVersion == "builtin-cccccccccccc"
			}},
		{api.Heartbeat{HostID: "h1", ConfigVersion: "ba9876543210"},
			func(h api.Host) bool {
				return h.ConfigVersion == "ba9876543210" && h.RulesVersion == "builtin-cccccccccccc"
			}},
	}
	for i, st := range steps {
		if err := s.Heartbeat(ctx, "h1", st.hb); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		h := hostByID(t, s, "h1")
		if !st.want(h) {
			t.Errorf("step %d: host %+v", i, h)
		}
		if !h.LastSeen.After(base.LastSeen) {
			t.Errorf("step %d: last_seen did not advance (%v)", i, h.LastSeen)
		}
		if h.AgentID != base.AgentID || !h.EnrolledAt.Equal(base.EnrolledAt) {
			t.Errorf("step %d: heartbeat changed identity: %+v", i, h)
		}
	}
}

func testQueryAlerts(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var docs []store.Doc
	for i := range 10 {
		host := []string{"h1", "h2"}[i%2]
		rule := []string{"rA", "rB", "rC"}[i%3]
		docs = append(docs, Alert(fmt.Sprintf("q%02d", i), host, rule, t0.Add(time.Duration(i)*time.Minute)))
	}
	docs = append(docs, Telemetry("t1", "h1", t0.Add(time.Hour)))
	// One alert of higher severity, for MinSeverity.
	docs[4].Severity = 90
	docs[4].JSON = bytes.Replace(docs[4].JSON, []byte(`"severity":70`), []byte(`"severity":90`), 1)
	if _, _, err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    store.AlertFilter
		want string
	}{
		{"all, newest first", store.AlertFilter{}, "[q09 q08 q07 q06 q05 q04 q03 q02 q01 q00]"},
		{"limit", store.AlertFilter{Limit: 3}, "[q09 q08 q07]"},
		{"since is inclusive", store.AlertFilter{Since: t0.Add(7 * time.Minute)}, "[q09 q08 q07]"},
		{"host", store.AlertFilter{HostID: "h2"}, "[q09 q07 q05 q03 q01]"},
		{"rule", store.AlertFilter{RuleID: "rA"}, "[q09 q06 q03 q00]"},
		{"host and rule and since", store.AlertFilter{HostID: "h1", RuleID: "rA", Since: t0.Add(time.Minute)}, "[q06]"},
		{"nothing matches", store.AlertFilter{HostID: "h3"}, "[]"},
		{"limit above the cap is capped", store.AlertFilter{Limit: store.MaxAlertLimit + 1}, "[q09 q08 q07 q06 q05 q04 q03 q02 q01 q00]"},
		{"until is exclusive (the next page)", store.AlertFilter{Until: t0.Add(7 * time.Minute), Limit: 3}, "[q06 q05 q04]"},
		{"any of hosts", store.AlertFilter{HostIDs: []string{"h2", "h3"}, Limit: 2}, "[q09 q07]"},
		{"hosts and rule", store.AlertFilter{HostIDs: []string{"h1"}, RuleID: "rB"}, "[q04]"},
		{"min severity", store.AlertFilter{MinSeverity: 80}, "[q04]"},
		{"event id", store.AlertFilter{EventID: "q05"}, "[q05]"},
	}
	for _, tt := range tests {
		got, err := s.QueryAlerts(ctx, tt.f)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if g := fmt.Sprint(eventIDs(t, got)); g != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, g, tt.want)
		}
	}
}

// testQueryAlertTies: alerts sharing a timestamp come newest event id
// first, wherever the limit cuts them (Elasticsearch finds the newest by
// timestamp alone and orders ties itself).
func testQueryAlertTies(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	docs := []store.Doc{Alert("old", "h1", "r", t0.Add(-time.Minute)), Alert("tie-b", "h1", "r", t0), Alert("tie-d", "h2", "r", t0),
		Alert("tie-a", "h1", "r", t0), Alert("tie-c", "h2", "r", t0), Alert("new", "h1", "r", t0.Add(time.Minute))}
	if _, _, err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    store.AlertFilter
		want string
	}{
		{store.AlertFilter{Limit: 1}, "[new]"},
		{store.AlertFilter{Limit: 2}, "[new tie-d]"},
		{store.AlertFilter{Limit: 3}, "[new tie-d tie-c]"},
		{store.AlertFilter{Limit: 5}, "[new tie-d tie-c tie-b tie-a]"},
		{store.AlertFilter{Limit: 6}, "[new tie-d tie-c tie-b tie-a old]"},
		{store.AlertFilter{}, "[new tie-d tie-c tie-b tie-a old]"},
		{store.AlertFilter{Limit: 2, HostID: "h1"}, "[new tie-b]"},
		{store.AlertFilter{Limit: 2, Until: t0.Add(time.Minute)}, "[tie-d tie-c]"},
		{store.AlertFilter{Limit: 2, Until: t0}, "[old]"},
	} {
		got, err := s.QueryAlerts(ctx, tc.f)
		if err != nil {
			t.Fatalf("%+v: %v", tc.f, err)
		}
		if g := fmt.Sprint(eventIDs(t, got)); g != tc.want {
			t.Errorf("QueryAlerts(limit %d, host %q, until %v) = %s, want %s", tc.f.Limit, tc.f.HostID, tc.f.Until, g, tc.want)
		}
	}
}

func testHostsAlertCount(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	for _, h := range []string{"b-till", "a-till", "c-till"} {
		enroll(t, s, h)
	}
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	docs := []store.Doc{Alert("x1", "a-till", "r", ts), Alert("x2", "a-till", "r", ts), Alert("x3", "b-till", "r", ts),
		Telemetry("x4", "c-till", ts)}
	if _, _, err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	hosts, err := s.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hosts {
		got = append(got, fmt.Sprintf("%s=%d", h.HostID, h.AlertCount))
	}
	if fmt.Sprint(got) != "[a-till=2 b-till=1 c-till=0]" {
		t.Errorf("hosts %v, want [a-till=2 b-till=1 c-till=0] (sorted by host id)", got)
	}
	// Host: one of them by its id, with its count.
	if ov, ok := s.(store.Overview); ok {
		for _, want := range hosts {
			got, err := ov.Host(ctx, want.HostID)
			if err != nil {
				t.Fatalf("Host(%s): %v", want.HostID, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Host(%s) = %+v, want %+v as Hosts lists it", want.HostID, got, want)
			}
		}
		if _, err := ov.Host(ctx, "never-enrolled"); !errors.Is(err, store.ErrUnknownHost) {
			t.Errorf("Host(never-enrolled) error = %v, want ErrUnknownHost", err)
		}
	}
	// HostList: the same hosts without counting their alerts.
	if ov, ok := s.(store.Overview); ok {
		list, err := ov.HostList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range hosts {
			hosts[i].AlertCount = 0
		}
		if !reflect.DeepEqual(list, hosts) {
			t.Errorf("HostList %+v, want Hosts without counts %+v", list, hosts)
		}
	}
}

// withFields returns d with extra top-level members merged into its
// document (one level deep: {"tillwatch": {...}}).
func withFields(d store.Doc, extra map[string]any) store.Doc {
	var m map[string]any
	_ = json.Unmarshal(d.JSON, &m) // Alert's own output
	for k, v := range extra {
		m[k] = v
	}
	d.JSON, _ = json.Marshal(m)
	return d
}

func testOverview(t *testing.T, s store.Store) {
	ov, ok := s.(store.Overview)
	if !ok {
		t.Skip("the store does not implement store.Overview")
	}
	ctx := ctxFor(t)
	for _, h := range []string{"h1", "h2", "h3", "h5"} {
		enroll(t, s, h)
	}
	since := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return since.Add(time.Duration(m) * time.Minute) }
	response := func(action, result string) map[string]any {
		return map[string]any{"response": map[string]any{"action": action, "result": result}}
	}
	integrity := Alert("o-integrity", "h1", "TW-INT-0001", at(1))
	integrity.Ruleset = "integrity"
	integrity.JSON = bytes.Replace(integrity.JSON, []byte(`"ruleset":"rmm"`), []byte(`"ruleset":"integrity"`), 1)
	health := func(id, host, component, state string, ts time.Time) store.Doc {
		doc, _ := json.Marshal(map[string]any{
			"@timestamp": ts.UTC().Format(time.RFC3339Nano),
			"event":      map[string]any{"id": id, "kind": "state", "dataset": "tillwatch.health", "action": "health-" + state},
			"host":       map[string]any{"id": host, "name": host},
			"tillwatch":  map[string]any{"health": map[string]any{"component": component, "state": state}},
		})
		return store.Doc{EventID: id, Kind: "state", Dataset: "tillwatch.health", HostID: host, Timestamp: ts, Ingested: time.Now(), JSON: doc}
	}
	docs := []store.Doc{
		withFields(Alert("o-killed", "h1", "r", at(1)), map[string]any{"tillwatch": response("kill", "ok")}),
		withFields(Alert("o-reported", "h1", "r", at(2)), map[string]any{"tillwatch": response("none", "ok")}),
		withFields(Alert("o-kill-failed", "h1", "r", at(3)), map[string]any{"tillwatch": response("kill", "failed")}),
		withFields(Alert("o-guard", "h1", "r", at(4)), map[string]any{"tillwatch": map[string]any{"ransomware": map[string]any{"score": 90, "stopped": []int{4242}}}}),
		withFields(Alert("o-guard-none", "h1", "r", at(5)), map[string]any{"tillwatch": map[string]any{"ransomware": map[string]any{"score": 90}}}),
		Alert("o-bare", "h2", "r", at(1)),
		withFields(Alert("o-isolated", "h2", "r", at(2)), map[string]any{"tillwatch": response("isolate", "ok")}),
		withFields(Alert("o-old", "h3", "r", since.Add(-time.Second)), map[string]any{"tillwatch": response("none", "ok")}),
		integrity,
		health("o-h1", "h1", "fileactivity", "degraded", at(1)),
		health("o-h2", "h1", "fileactivity", "ok", at(3)),
		health("o-h3", "h1", "process", "failed", at(2)),
		health("o-h4", "h2", "process", "degraded", at(2)),
		Telemetry("o-t1", "h1", at(4)),
	}
	for _, a := range store.StoppingActions {
		docs = append(docs, withFields(Alert("o-h5-"+a, "h5", "r", at(6)), map[string]any{"tillwatch": response(a, "ok")}))
	}
	if _, _, err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	got, err := ov.AlertTally(ctx, since)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.AlertTally{
		// stopped: kill ok, the guard's stop; not: none, kill failed, a
		// ransomware alert that stopped nothing. The integrity alert is
		// not an attack.
		"h1": {Alerts: 5, Unstopped: 3},
		"h2": {Alerts: 2, Unstopped: 1},
		"h5": {Alerts: len(store.StoppingActions), Unstopped: 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("AlertTally(since) = %v, want %v (h3's alert is older than since)", got, want)
	}
	if got, err := ov.AlertTally(ctx, at(3)); err != nil || fmt.Sprint(got) != fmt.Sprint(map[string]store.AlertTally{"h1": {Alerts: 3, Unstopped: 2}, "h5": {Alerts: len(store.StoppingActions)}}) {
		t.Errorf("AlertTally(since+3m) = %v, %v", got, err)
	}
	for _, tc := range []struct {
		host  string
		limit int
		want  string
	}{
		{"h1", 10, "[o-h2 o-h3 o-h1]"},
		{"h1", 2, "[o-h2 o-h3]"},
		{"h2", 10, "[o-h4]"},
		{"h3", 10, "[]"},
	} {
		docs, err := ov.HealthEvents(ctx, tc.host, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if g := fmt.Sprint(eventIDs(t, docs)); g != tc.want {
			t.Errorf("HealthEvents(%s, %d) = %s, want %s", tc.host, tc.limit, g, tc.want)
		}
	}
}

func testSequences(t *testing.T, s store.Store) {
	tr, ok := s.(store.SequenceTracker)
	if !ok {
		t.Skip("backend does not track sequences")
	}
	ctx := ctxFor(t)
	if _, err := tr.TrackSequences(ctx, "ghost", []int64{1}); !errors.Is(err, store.ErrUnknownHost) {
		t.Errorf("TrackSequences(unknown host) = %v, want ErrUnknownHost", err)
	}
	enroll(t, s, "h1")
	steps := []struct {
		seqs     []int64
		wantGaps string
	}{
		{[]int64{1, 2, 3}, "[]"},
		{[]int64{4, 8}, "[{5 7}]"},
		{[]int64{5, 6}, "[]"}, // late redelivery is not a gap
		{[]int64{10}, "[{9 9}]"},
	}
	for i, st := range steps {
		gaps, err := tr.TrackSequences(ctx, "h1", st.seqs)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if g := fmt.Sprint(append([]store.SequenceGap{}, gaps...)); g != st.wantGaps {
			t.Errorf("step %d: gaps %s, want %s", i, g, st.wantGaps)
		}
	}
	h := hostByID(t, s, "h1")
	if h.LastSequence != 10 || h.EventsLost != 4 {
		t.Errorf("last_sequence %d events_lost %d, want 10 and 4", h.LastSequence, h.EventsLost)
	}
}

func hostByID(t *testing.T, s store.Store, id string) api.Host {
	t.Helper()
	hosts, err := s.Hosts(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	i := sort.Search(len(hosts), func(i int) bool { return hosts[i].HostID >= id })
	if i == len(hosts) || hosts[i].HostID != id {
		t.Fatalf("host %s not listed (or hosts not sorted by id): %+v", id, hosts)
	}
	return hosts[i]
}

func eventIDs(t *testing.T, docs []json.RawMessage) []string {
	t.Helper()
	ids := []string{}
	for _, d := range docs {
		var v struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		}
		if err := json.Unmarshal(d, &v); err != nil {
			t.Fatalf("stored document is not JSON: %v: %s", err, d)
		}
		ids = append(ids, v.Event.ID)
	}
	return ids
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// testCommands: the kill-switch audit trail and delivery. Only active,
// unexpired commands are delivered, to the hosts they address, until each
// host acknowledges; approval activates a pending command and moves the
// generation on so long-polls wake.
func testCommands(t *testing.T, s store.Store) {
	cs, ok := s.(store.CommandStore)
	if !ok {
		t.Fatalf("%T does not implement store.CommandStore", s)
	}
	ctx := ctxFor(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := func(id, state string, notAfter time.Time) store.CommandRecord {
		return store.CommandRecord{
			ID: id, Action: killswitch.ActionDisableRMM, Targets: "2 hosts", Issuer: "responder:alice",
			Reason: "campaign", IssuedAt: now, NotAfter: notAfter, State: state,
			Signed: killswitch.Signed{Payload: []byte(`{"id":"` + id + `"}`)},
		}
	}
	gen0, err := cs.CommandsGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.CreateCommand(ctx, rec("cmd-active-1", store.CommandActive, now.Add(time.Hour)), []string{"till-a", "till-b"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CreateCommand(ctx, rec("cmd-waiting-2", store.CommandPendingApproval, now.Add(time.Hour)), []string{"till-a"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CreateCommand(ctx, rec("cmd-expired-3", store.CommandActive, now.Add(-time.Second)), []string{"till-a"}); err != nil {
		t.Fatal(err)
	}
	gen1, err := cs.CommandsGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gen1 <= gen0 {
		t.Fatalf("generation %d did not move on from %d after an active command", gen1, gen0)
	}
	pendingIDs := func(host string) []string {
		t.Helper()
		got, err := cs.PendingCommands(ctx, host, now)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sg := range got {
			var p struct{ ID string }
			json.Unmarshal(sg.Payload, &p)
			ids = append(ids, p.ID)
		}
		return ids
	}
	if got := pendingIDs("till-a"); fmt.Sprint(got) != "[cmd-active-1]" {
		t.Fatalf("till-a pending %v, want only the active, unexpired command", got)
	}
	if got := pendingIDs("till-a"); fmt.Sprint(got) != "[cmd-active-1]" {
		t.Fatalf("an unacknowledged command must be delivered again, got %v", got)
	}
	if got := pendingIDs("till-c"); len(got) != 0 {
		t.Fatalf("unaddressed host got %v", got)
	}
	_, hosts, err := cs.Command(ctx, "cmd-active-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].HostID != "till-a" || hosts[0].State != store.HostDelivered || hosts[1].State != store.HostPending {
		t.Fatalf("host states %+v", hosts)
	}
	res := killswitch.Result{Status: killswitch.StatusOK, Detail: "killed 2", Affected: []string{"41", "42"}}
	if err := cs.AckCommand(ctx, "cmd-active-1", "till-a", res, now); err != nil {
		t.Fatal(err)
	}
	if err := cs.AckCommand(ctx, "cmd-active-1", "till-c", res, now); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("ack from an unaddressed host: %v", err)
	}
	if got := pendingIDs("till-a"); len(got) != 0 {
		t.Fatalf("acknowledged command delivered again: %v", got)
	}
	got, hosts, err := cs.Command(ctx, "cmd-active-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Issuer != "responder:alice" || got.Reason != "campaign" || !got.IssuedAt.Equal(now) {
		t.Fatalf("record %+v", got)
	}
	if h := hosts[0]; h.State != store.HostAcked || h.Result == nil || h.Result.Status != killswitch.StatusOK ||
		fmt.Sprint(h.Result.Affected) != "[41 42]" || h.AckedAt.IsZero() || h.DeliveredAt.IsZero() {
		t.Fatalf("acked host %+v", h)
	}
	// The same states for several commands in one query (store.Overview).
	if ov, ok := s.(store.Overview); ok {
		ids := []string{"cmd-active-1", "cmd-waiting-2", "cmd-nope-0000"}
		all, err := ov.CommandHosts(ctx, ids, "")
		if err != nil {
			t.Fatal(err)
		}
		brief := func(m map[string][]store.CommandHost) string {
			var out []string
			for _, id := range ids {
				for _, h := range m[id] {
					st := h.State
					if h.Result != nil {
						st += "/" + h.Result.Status
					}
					out = append(out, id+":"+h.HostID+"="+st)
				}
			}
			return strings.Join(out, " ")
		}
		if got, want := brief(all), "cmd-active-1:till-a=acked/ok cmd-active-1:till-b=pending cmd-waiting-2:till-a=pending"; got != want {
			t.Errorf("CommandHosts = %s, want %s", got, want)
		}
		if !reflect.DeepEqual(all["cmd-active-1"], hosts) {
			t.Errorf("CommandHosts %+v differs from Command's %+v", all["cmd-active-1"], hosts)
		}
		one, err := ov.CommandHosts(ctx, ids, "till-b")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := brief(one), "cmd-active-1:till-b=pending"; got != want {
			t.Errorf("CommandHosts for till-b = %s, want %s", got, want)
		}
	}

	// Approval: more signatures, then active.
	sg := rec("cmd-waiting-2", "", time.Time{}).Signed
	sg.Signatures = []killswitch.Signature{{KeyID: "aaaa", Sig: []byte{1}}, {KeyID: "bbbb", Sig: []byte{2}}}
	if err := cs.UpdateCommand(ctx, "cmd-waiting-2", 0, sg, store.CommandActive); err != nil {
		t.Fatal(err)
	}
	gen2, _ := cs.CommandsGeneration(ctx)
	if gen2 <= gen1 {
		t.Fatalf("approval did not move the generation (%d -> %d)", gen1, gen2)
	}
	if got := pendingIDs("till-a"); fmt.Sprint(got) != "[cmd-waiting-2]" {
		t.Fatalf("approved command not delivered: %v", got)
	}
	w, _, err := cs.Command(ctx, "cmd-waiting-2")
	if err != nil || w.State != store.CommandActive || len(w.Signed.Signatures) != 2 {
		t.Fatalf("approved record %+v %v", w, err)
	}
	if err := cs.UpdateCommand(ctx, "cmd-nope-0000", 0, sg, store.CommandActive); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("update of an unknown command: %v", err)
	}
	if _, _, err := cs.Command(ctx, "cmd-nope-0000"); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	list, err := cs.Commands(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].ID != "cmd-expired-3" || list[2].ID != "cmd-active-1" {
		t.Fatalf("commands newest first: %+v", list)
	}
}

// testPendingFor: one look answers many hosts, each with its own commands
// oldest first, marks them delivered as PendingCommands does, and leaves
// out hosts with nothing (acknowledged, unaddressed, not yet approved).
func testPendingFor(t *testing.T, s store.Store) {
	cs, ok := s.(store.CommandStore)
	if !ok {
		t.Fatalf("%T does not implement store.CommandStore", s)
	}
	ctx := ctxFor(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	create := func(id, state string, hosts ...string) {
		t.Helper()
		err := cs.CreateCommand(ctx, store.CommandRecord{ID: id, Action: killswitch.ActionDisableRMM, Targets: "hosts",
			Issuer: "responder:alice", IssuedAt: now, NotAfter: now.Add(time.Hour), State: state,
			Signed: killswitch.Signed{Payload: []byte(`{"id":"` + id + `"}`)}}, hosts)
		if err != nil {
			t.Fatal(err)
		}
	}
	// A fleet larger than one search page of the Elasticsearch store's
	// tests, so the hosts are looked up in several chunks.
	var fleet []string
	for i := range 25 {
		fleet = append(fleet, fmt.Sprintf("till-%02d", i))
	}
	create("cmd-1-first", store.CommandActive, fleet...)
	create("cmd-2-second", store.CommandActive, "till-00", "till-01")
	create("cmd-3-unapproved", store.CommandPendingApproval, "till-00")
	if err := cs.AckCommand(ctx, "cmd-1-first", "till-02", killswitch.Result{Status: killswitch.StatusOK}, now); err != nil {
		t.Fatal(err)
	}
	ids := func(sgs []killswitch.Signed) string {
		var out []string
		for _, sg := range sgs {
			var p struct{ ID string }
			json.Unmarshal(sg.Payload, &p)
			out = append(out, p.ID)
		}
		return fmt.Sprint(out)
	}
	ask := append([]string{"till-xx"}, fleet...) // till-xx is addressed by nothing
	var answered map[string][]killswitch.Signed
	calls := 0
	got, err := cs.PendingCommandsFor(ctx, ask, now, func(m map[string][]killswitch.Signed) {
		calls++
		answered = m
		// Called before the mark: every delivery is still pending.
		_, hosts, err := cs.Command(ctx, "cmd-1-first")
		if err != nil {
			t.Error(err)
		}
		for _, h := range hosts {
			if h.HostID != "till-02" && h.State != store.HostPending {
				t.Errorf("%s is %s when the answer is handed out, want it still pending (answered before the mark)", h.HostID, h.State)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || fmt.Sprint(answered) != fmt.Sprint(got) {
		t.Errorf("answer called %d times with %v; want once with the returned %v", calls, answered, got)
	}
	if len(got) != len(fleet)-1 {
		t.Errorf("%d hosts answered, want %d (all but the one that acknowledged)", len(got), len(fleet)-1)
	}
	for _, h := range ask {
		want := "[cmd-1-first]"
		switch h {
		case "till-00", "till-01":
			want = "[cmd-1-first cmd-2-second]"
		case "till-02", "till-xx":
			want = "[]"
		}
		if g := ids(got[h]); g != want {
			t.Errorf("%s: %s, want %s", h, g, want)
		}
	}
	_, hosts, err := cs.Command(ctx, "cmd-1-first")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		want := store.HostDelivered
		if h.HostID == "till-02" {
			want = store.HostAcked
		}
		if h.State != want {
			t.Errorf("%s is %s after the look, want %s", h.HostID, h.State, want)
		}
	}
	// The single-host look agrees, and redelivers until acknowledged.
	single, err := cs.PendingCommands(ctx, "till-01", now)
	if err != nil || ids(single) != "[cmd-1-first cmd-2-second]" {
		t.Errorf("PendingCommands(till-01) = %s %v", ids(single), err)
	}
	if got, err := cs.PendingCommandsFor(ctx, nil, now, nil); err != nil || len(got) != 0 {
		t.Errorf("no hosts: %v %v", got, err)
	}
}

// testConcurrentApprovals is the lost-update attack on approvals: responders
// approving at once each read the command, add their signature and write
// it back. Without compare-and-swap the last write wins and the others'
// signatures vanish (a two-person rule then never completes, or an audit
// trail misses an approver). With it every signature survives: a write
// from a stale read is refused with ErrCommandConflict and retried.
func testConcurrentApprovals(t *testing.T, s store.Store) {
	cs := s.(store.CommandStore)
	ctx := ctxFor(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	id := "cmd-concurrent"
	if err := cs.CreateCommand(ctx, store.CommandRecord{
		ID: id, Action: killswitch.ActionIsolateHost, Targets: "all", Issuer: "responder:alice",
		IssuedAt: now, NotAfter: now.Add(time.Hour), State: store.CommandPendingApproval, Required: 2,
		Signed: killswitch.Signed{Payload: []byte(`{"id":"` + id + `"}`)},
	}, []string{"till-a"}); err != nil {
		t.Fatal(err)
	}
	// A stale count is refused outright.
	stale := killswitch.Signed{Payload: []byte(`{"id":"` + id + `"}`), Signatures: []killswitch.Signature{{KeyID: "x", Sig: []byte{1}}}}
	if err := cs.UpdateCommand(ctx, id, 3, stale, store.CommandPendingApproval); !errors.Is(err, store.ErrCommandConflict) {
		t.Fatalf("update from a stale read: %v, want ErrCommandConflict", err)
	}
	const approvers = 8
	var (
		wg        sync.WaitGroup
		conflicts sync.Map
		start     = make(chan struct{})
		errs      = make(chan error, approvers)
	)
	for i := range approvers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sig := killswitch.Signature{KeyID: fmt.Sprintf("responder-%d", i), Sig: []byte{byte(i)}}
			for attempt := 0; attempt < 10*approvers; attempt++ {
				rec, _, err := cs.Command(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				prev := len(rec.Signed.Signatures)
				signed := rec.Signed
				signed.Signatures = append(append([]killswitch.Signature(nil), signed.Signatures...), sig)
				err = cs.UpdateCommand(ctx, id, prev, signed, store.CommandPendingApproval)
				if errors.Is(err, store.ErrCommandConflict) {
					conflicts.Store(i, true)
					continue
				}
				if err != nil {
					errs <- err
				}
				return
			}
			errs <- fmt.Errorf("approver %d: still conflicting", i)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _, err := cs.Command(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, sg := range got.Signed.Signatures {
		seen[sg.KeyID] = true
	}
	if len(got.Signed.Signatures) != approvers || len(seen) != approvers {
		t.Fatalf("%d concurrent approvals left %d signatures (%v): approvals were lost", approvers, len(got.Signed.Signatures), seen)
	}
}

// testHostBound is the takeover at the store: a host id is bound to the
// host key of its first enrolment. Another key is refused (the host's
// credential keeps working); the same key re-enrols; a rebind (host
// token) replaces it; a host enrolled before host keys is claimed only by
// a renewal.
func testHostBound(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const keyA, keyB = "key-a-0123456789abcdef0123456789abcdef", "key-b-0123456789abcdef0123456789abcdef"
	req := api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyA}
	first, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	claim := req
	claim.HostKey = keyB
	if _, err := s.Enroll(ctx, claim, store.Enroller{}); !errors.Is(err, store.ErrHostKeyMismatch) {
		t.Fatalf("enrolment with another key: %v, want ErrHostKeyMismatch", err)
	}
	if _, host, err := s.Authenticate(ctx, first.Credential); err != nil || host != "till-a" {
		t.Fatalf("the real host's credential after a refused claim: %q %v", host, err)
	}
	claim.HostKey = ""
	if _, err := s.Enroll(ctx, claim, store.Enroller{}); !errors.Is(err, store.ErrHostKeyMismatch) {
		t.Fatalf("enrolment without a key of a bound host: %v", err)
	}
	again, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil || again.AgentID != first.AgentID {
		t.Fatalf("re-enrolment with the bound key: %+v %v", again, err)
	}
	claim.HostKey = keyB
	if _, err := s.Enroll(ctx, claim, store.Enroller{Rebind: true}); err != nil {
		t.Fatalf("rebind: %v", err)
	}
	if _, err := s.Enroll(ctx, req, store.Enroller{}); !errors.Is(err, store.ErrHostKeyMismatch) {
		t.Fatalf("the old key after a rebind: %v", err)
	}
	// A host enrolled before host keys: an enrolment token cannot claim
	// it, its own credential can.
	legacy := api.EnrollRequest{HostID: "till-old", HostName: "till-old", AgentVersion: "0.9"}
	if _, err := s.Enroll(ctx, legacy, store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	legacy.HostKey = keyB
	if _, err := s.Enroll(ctx, legacy, store.Enroller{}); !errors.Is(err, store.ErrHostKeyMismatch) {
		t.Fatalf("claim of a host enrolled before host keys: %v", err)
	}
	legacy.HostKey = keyA
	if _, err := s.Enroll(ctx, legacy, store.Enroller{Renewal: true}); err != nil {
		t.Fatalf("renewal binding the first key: %v", err)
	}
	legacy.HostKey = keyB
	if _, err := s.Enroll(ctx, legacy, store.Enroller{Renewal: true}); !errors.Is(err, store.ErrHostKeyMismatch) {
		t.Fatalf("renewal with another key once bound: %v", err)
	}
}

// testTokenUses: an enrolment token with max uses enrols that many times
// (concurrently too) and then authenticates as used up.
func testTokenUses(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	tok, err := s.CreateToken(ctx, api.RoleSensor, "", time.Time{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	by := store.Enroller{TokenHash: store.HashToken(tok)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, usedUp := 0, 0
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := fmt.Sprintf("fake-%d", i)
			_, err := s.Enroll(ctx, api.EnrollRequest{HostID: host, HostName: host, HostKey: "key-0123456789abcdef0123456789abcdef"}, by)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrTokenUsedUp):
				usedUp++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 || usedUp != 3 {
		t.Fatalf("six enrolments with a three-use token: %d enrolled, %d refused", ok, usedUp)
	}
	if _, _, err := s.Authenticate(ctx, tok); !errors.Is(err, store.ErrTokenUsedUp) {
		t.Fatalf("Authenticate of a used-up token: %v", err)
	}
}

// testTokensListAndRevoke: listing shows ids, roles, expiry and uses and
// never the secret; revoking by id stops the token at once.
func testTokensListRevoke(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	tok, err := s.CreateToken(ctx, api.RoleAnalyst, "", exp, 0)
	if err != nil {
		t.Fatal(err)
	}
	enrol, err := s.CreateToken(ctx, api.RoleSensor, "till-9", time.Time{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := store.TokenID(store.HashToken(tok))
	var found, foundEnrol bool
	for _, ti := range list {
		raw, _ := json.Marshal(ti)
		if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(store.HashToken(tok))) {
			t.Fatalf("listing shows a secret: %s", raw)
		}
		if ti.ID == id {
			found = ti.Role == api.RoleAnalyst && ti.ExpiresAt.Equal(exp) && !ti.Revoked
		}
		if ti.ID == store.TokenID(store.HashToken(enrol)) {
			foundEnrol = ti.HostID == "till-9" && ti.MaxUses == 1 && ti.Uses == 0
		}
	}
	if !found || !foundEnrol {
		t.Fatalf("listing %+v lacks the tokens as created", list)
	}
	if err := s.RevokeToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, tok); !errors.Is(err, store.ErrUnknownToken) {
		t.Fatalf("revoked token: %v", err)
	}
	if err := s.RevokeToken(ctx, "000000000000"); !errors.Is(err, store.ErrUnknownToken) {
		t.Fatalf("revoking an unknown id: %v", err)
	}
}
