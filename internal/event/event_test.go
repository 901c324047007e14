package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func sampleAlert() Event {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return Event{
		Timestamp: now,
		ECS:       ECS{Version: ECSVersion},
		Event: Meta{
			Kind: KindAlert, ID: NewID(), Category: []string{"process"}, Type: []string{"start"},
			Action: "exec-from-writable-dir", Severity: 73, RiskScore: 73, Dataset: DatasetAlerts,
		},
		Agent:   Agent{ID: "a1", Type: AgentType, Version: "0.1.0"},
		Host:    Host{ID: "h1", Name: "till-042"},
		Rule:    &Rule{ID: "TW-PROC-0001", Name: "Executable run from a world-writable directory", Ruleset: RulesetSigma},
		Threat:  &Threat{Framework: "MITRE ATT&CK", Technique: Technique{ID: []string{"T1204.002"}}},
		Process: &Process{PID: 42, Name: "x", Parent: &ParentProcess{PID: 1, Name: "init"}},
	}
}

func TestAlertJSONUsesECSNames(t *testing.T) {
	t.Parallel()
	a := sampleAlert()
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"@timestamp", "event.kind", "event.id", "rule.ruleset", "process.parent.pid", "threat.technique.id", "agent.type", "ecs.version"} {
		if lookup(m, path) == nil {
			t.Errorf("%s missing from %s", path, raw)
		}
	}
	if _, ok := m["file"]; ok {
		t.Errorf("an event without a file must not carry a file object: %s", raw)
	}
	var back Event
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Event.ID != a.Event.ID || !back.Timestamp.Equal(a.Timestamp) || back.Process.Parent.PID != 1 {
		t.Errorf("round trip changed the event: %+v", back)
	}
}

func lookup(m map[string]any, path string) any {
	v, _ := Lookup(m, path)
	return v
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*Event)
		wantErr []string
	}{
		{"complete alert", func(*Event) {}, nil},
		{"telemetry needs no rule", func(e *Event) { e.Event.Kind = KindEvent; e.Rule = nil; e.Threat = nil }, nil},
		{"alert without rule", func(e *Event) { e.Rule = nil }, []string{"rule.id", "rule.name", "rule.ruleset"}},
		{"unknown ruleset", func(e *Event) { e.Rule.Ruleset = "custom" }, []string{"rule.ruleset"}},
		{"severity out of range", func(e *Event) { e.Event.Severity = 101 }, []string{"event.severity"}},
		{"every missing field at once", func(e *Event) { e.Event.ID = ""; e.Host = Host{} }, []string{"event.id", "host.id", "host.name"}},
		{"bad response action", func(e *Event) {
			e.Tillwatch = &Tillwatch{Response: &Response{Action: "reboot", Result: "ok"}}
		}, []string{"tillwatch.response.action"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := sampleAlert()
			tc.mutate(&e)
			err := e.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want errors naming %v, got none", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestNewIDUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 10000 {
		id := NewID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}
