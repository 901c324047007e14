package console

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

func TestDeriveStates(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fresh := api.Host{LastSeen: now.Add(-time.Minute), Health: map[string]string{"process": "ok"}}
	silent := api.Host{LastSeen: now.Add(-6 * time.Minute)}
	degraded := api.Host{LastSeen: now, Health: map[string]string{"process": "ok", "fileactivity": "failed"}}
	cases := []struct {
		name string
		f    facts
		want string
	}{
		{"quiet till", facts{Host: fresh}, "protected"},
		{"unstopped alert", facts{Host: fresh, Alerts: 2, Unstopped: 1}, "alerting"},
		{"every alert stopped", facts{Host: fresh, Alerts: 2}, "attack-stopped"},
		{"silent", facts{Host: silent}, "silenced"},
		{"silent and alerting: alerting first", facts{Host: silent, Alerts: 1, Unstopped: 1}, "alerting silenced"},
		{"isolated after a stopped attack", facts{Host: fresh, Alerts: 1, Isolated: true}, "isolated attack-stopped"},
		{"rmm disabled and degraded", facts{Host: degraded, RMMDisabled: true}, "rmm-disabled degraded"},
		{"degraded only", facts{Host: degraded}, "degraded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := strings.Join(deriveStates(tc.f, now, 5*time.Minute), " "); got != tc.want {
				t.Errorf("states %q, want %q", got, tc.want)
			}
		})
	}
}

func TestToggleKeepsTheLatest(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var h hostToggle
	h.apply(killswitch.ActionDisableRMM, t0)
	h.apply(killswitch.ActionIsolateHost, t0.Add(time.Minute))
	h.apply(killswitch.ActionEnableRMM, t0.Add(2*time.Minute))
	h.apply(killswitch.ActionDisableRMM, t0.Add(time.Second)) // older, listed later: ignored
	h.apply(killswitch.ActionScan, t0.Add(time.Hour))         // not a toggle
	if h.rmmOff || !h.isolated {
		t.Errorf("rmm off %v, isolated %v; want false, true", h.rmmOff, h.isolated)
	}
}

func TestAlertStopped(t *testing.T) {
	t.Parallel()
	cases := []struct {
		doc  string
		want bool
	}{
		{`{"tillwatch":{"response":{"action":"kill","result":"ok"}}}`, true},
		{`{"tillwatch":{"response":{"action":"kill","result":"operation not permitted"}}}`, false},
		{`{"tillwatch":{"response":{"action":"none","result":"ok"}}}`, false},
		{`{"tillwatch":{"ransomware":{"stopped":[42]}}}`, true},
		{`{"rule":{"id":"x"}}`, false},
	}
	for _, tc := range cases {
		a, err := parseAlert(json.RawMessage(tc.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := a.stopped(); got != tc.want {
			t.Errorf("%s: stopped %v, want %v", tc.doc, got, tc.want)
		}
	}
}
