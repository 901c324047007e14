package console

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/ingest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// stored ingests evs as the collector's ingest route does (parsed and
// validated by collector/ingest) and returns the stored docs.
func (f *fixture) stored(t *testing.T, host string, evs ...event.Event) []store.Doc {
	t.Helper()
	var docs []store.Doc
	for i := range evs {
		line, err := json.Marshal(&evs[i])
		if err != nil {
			t.Fatal(err)
		}
		d, err := ingest.ParseLine(line, host, time.Now())
		if err != nil {
			t.Fatalf("ingest %s: %v", line, err)
		}
		docs = append(docs, d)
	}
	if _, _, err := f.st.Ingest(context.Background(), docs); err != nil {
		t.Fatal(err)
	}
	return docs
}

func (f *fixture) enrol(t *testing.T, host string) {
	t.Helper()
	if _, err := f.st.Enroll(context.Background(), api.EnrollRequest{HostID: host, HostName: host, OS: "linux",
		Labels: map[string]string{"store": "0042"}}, store.Enroller{}); err != nil {
		t.Fatal(err)
	}
}

// getJSON reads a console data view as a signed-in analyst.
func (f *fixture) getJSON(t *testing.T, cookie, path string, v any) {
	t.Helper()
	resp := f.do(t, http.MethodGet, path, "", map[string]string{"Cookie": cookie})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// healthChange is the event a sensor's health tracker sends when a
// component changes state (sensor/pipeline).
func healthChange(host, component, state, reason string, at time.Time) event.Event {
	ev := event.Event{
		Timestamp: at, ECS: event.ECS{Version: event.ECSVersion}, Message: component + " " + state + ": " + reason,
		Event: event.Meta{Kind: event.KindState, ID: event.NewID(), Category: []string{"host"}, Type: []string{"info"},
			Action: "health-" + state, Dataset: event.DatasetHealth, Reason: reason},
		Host:      event.Host{ID: host, Name: host},
		Agent:     event.Agent{ID: host, Type: event.AgentType, Version: "1.4.0"},
		Tillwatch: &event.Tillwatch{Health: &event.Health{Component: component, State: state}},
	}
	if state != event.HealthOK {
		ev.Error = &event.Error{Message: reason}
	}
	return ev
}

func attackAlert(host string, at time.Time, stopped bool) event.Event {
	resp := &event.Response{Action: event.ActionNone, Result: event.ResultOK}
	if stopped {
		resp = &event.Response{Action: event.ActionKill, Result: event.ResultOK}
	}
	return event.Event{
		Timestamp: at, ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"},
			Severity: 73, Dataset: event.DatasetAlerts},
		Rule:      &event.Rule{ID: "TW-RMM-0003", Name: "RMM agent started a decoder", Ruleset: event.RulesetRMM},
		Host:      event.Host{ID: host, Name: host},
		Agent:     event.Agent{ID: host, Type: event.AgentType, Version: "1.4.0"},
		Process:   &event.Process{PID: 4242, Name: "agent.bin"},
		Tillwatch: &event.Tillwatch{Mode: "enforce", Response: resp},
	}
}

// TestHostTimelineHasHealthChanges: a component's degradation and its
// recovery are on the host's timeline, in time order with its alerts, and
// another host's are not.
func TestHostTimelineHasHealthChanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enrol(t, "till-1")
	f.enrol(t, "till-2")
	now := time.Now().UTC()
	f.stored(t, "till-1",
		healthChange("till-1", "fileactivity", event.HealthDegraded, "fanotify queue overflowed", now.Add(-3*time.Minute)),
		attackAlert("till-1", now.Add(-2*time.Minute), true),
		healthChange("till-1", "fileactivity", event.HealthOK, "fanotify queue drained", now.Add(-time.Minute)))
	f.stored(t, "till-2", healthChange("till-2", "process", event.HealthFailed, "ring buffer gone", now))
	cookie, _ := f.signIn(t, api.RoleAnalyst)
	var v hostView
	f.getJSON(t, cookie, "/console/data/host?id=till-1", &v)
	var got []string
	for _, e := range v.Timeline {
		got = append(got, e.Kind+"|"+e.Status+"|"+e.Text)
	}
	want := []string{
		"health|ok|fileactivity ok: fanotify queue drained",
		"alert||TW-RMM-0003 RMM agent started a decoder (agent.bin) — kill: ok",
		"health|degraded|fileactivity degraded: fanotify queue overflowed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("timeline:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStoresTallyFollowsIngest: the stores page's alert counts are cached
// for the refresh interval, but an alert stored through this collector
// shows at once; one stored elsewhere (another collector on the store)
// shows once the interval has passed.
func TestStoresTallyFollowsIngest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enrol(t, "till-1")
	f.enrol(t, "till-2")
	cookie, _ := f.signIn(t, api.RoleAnalyst)
	state := func(host string) string {
		t.Helper()
		var v storesView
		f.getJSON(t, cookie, "/console/data/stores", &v)
		for _, g := range v.Groups {
			for _, tl := range g.Tills {
				if tl.HostID == host {
					return tl.State
				}
			}
		}
		t.Fatalf("%s not on the stores page", host)
		return ""
	}
	if s := state("till-1"); s != StateProtected {
		t.Fatalf("quiet till is %s", s)
	}
	// Through this collector: the server tells the console.
	f.con.Observe(f.stored(t, "till-1", attackAlert("till-1", time.Now().UTC(), false)))
	if s := state("till-1"); s != StateAlerting {
		t.Errorf("after an observed unstopped alert till-1 is %s, want alerting", s)
	}
	// Elsewhere: nobody tells this console; the cached tally holds until
	// the interval has passed.
	f.stored(t, "till-2", attackAlert("till-2", time.Now().UTC(), true))
	if s := state("till-2"); s != StateProtected {
		t.Errorf("within the interval till-2 is %s, want the cached protected", s)
	}
	f.clk.add(tallyTTL)
	if s := state("till-2"); s != StateAttackStopped {
		t.Errorf("after the interval till-2 is %s, want attack-stopped", s)
	}
	// Telemetry and health do not drop the cache.
	gen := f.con.tally.cur.Load()
	f.con.Observe(f.stored(t, "till-1", healthChange("till-1", "process", event.HealthOK, "back", time.Now().UTC())))
	if f.con.tally.cur.Load() != gen {
		t.Error("a batch without alerts dropped the cached tally")
	}
}
