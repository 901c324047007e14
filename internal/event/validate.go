package event

import (
	"errors"
	"fmt"
	"slices"
)

// Validate reports every way e falls short of the required fields
// (docs/reference.md "Alerts").
// Alerts carry more obligations than telemetry.
func (e *Event) Validate() error {
	var errs []error
	req := func(ok bool, field string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s is required", field))
		}
	}
	req(!e.Timestamp.IsZero(), "@timestamp")
	req(e.Event.ID != "", "event.id")
	req(e.Event.Kind != "", "event.kind")
	req(e.Host.ID != "", "host.id")
	req(e.Host.Name != "", "host.name")
	req(e.Agent.ID != "", "agent.id")
	req(e.Agent.Type == AgentType, "agent.type "+AgentType)
	req(e.Agent.Version != "", "agent.version")
	if e.Event.Kind == KindAlert {
		req(len(e.Event.Category) > 0, "event.category")
		req(len(e.Event.Type) > 0, "event.type")
		req(e.Event.Action != "", "event.action")
		req(e.Event.Severity > 0 && e.Event.Severity <= 100, "event.severity (1-100)")
		req(e.Event.RiskScore > 0 && e.Event.RiskScore <= 100, "event.risk_score (1-100)")
		req(e.Rule != nil && e.Rule.ID != "", "rule.id")
		req(e.Rule != nil && e.Rule.Name != "", "rule.name")
		req(e.Rule != nil && slices.Contains(Rulesets, e.Rule.Ruleset), "rule.ruleset (one of rmm, ransomware, yara, sigma, integrity, killswitch)")
		req(e.Threat != nil && e.Threat.Framework == "MITRE ATT&CK", `threat.framework "MITRE ATT&CK"`)
	}
	if e.Process != nil {
		req(e.Process.PID > 0, "process.pid")
		req(e.Process.Name != "", "process.name")
	}
	if e.File != nil {
		req(e.File.Path != "", "file.path")
	}
	if r := e.Tillwatch; r != nil && r.Response != nil {
		req(slices.Contains([]string{ActionKill, ActionSuspend, ActionQuarantine, ActionDisableRMM, ActionIsolate, ActionNone}, r.Response.Action), "tillwatch.response.action (kill, suspend, quarantine, disable-rmm, isolate, none)")
		req(r.Response.Result != "", "tillwatch.response.result")
	}
	return errors.Join(errs...)
}
