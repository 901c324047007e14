// Package alert builds ECS alerts from the event that triggered them, so
// every detector produces the same shape: rule, ATT&CK mapping, severity and
// the triggering process or file copied over.
package alert

import (
	"github.com/tillwatch/tillwatch/internal/event"
)

// Meta is what a rule says about the alerts it raises.
type Meta struct {
	RuleID      string
	RuleName    string
	Description string
	Ruleset     string // one of event.Rulesets
	Reference   string
	Severity    int // 1-100; also used as risk score
	Techniques  []Technique
	Tactic      *Technique
	// Action is event.action (what happened, e.g. "exec-from-memory").
	Action string
}

// Technique is a MITRE ATT&CK technique or tactic, as rule files write it
// ({id, name}) and alerts carry it: every rule format uses this one type,
// so its ATT&CK mapping reaches the alert without a conversion of its own.
type Technique struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
}

// TacticOf is a rule's tactic for Meta.Tactic: nil when the rule names
// none (no id).
func TacticOf(t Technique) *Technique {
	if t.ID == "" {
		return nil
	}
	return &t
}

// FromEvent returns an alert about src: category and type follow the
// triggering event, process and file are copied (deeply enough that later
// enrichment does not touch src).
func FromEvent(m Meta, src *event.Event, message string) event.Event {
	a := event.Event{
		Timestamp: src.Timestamp,
		Message:   message,
		Event: event.Meta{
			Kind:      event.KindAlert,
			ID:        event.NewID(),
			Category:  src.Event.Category,
			Type:      append([]string{"info"}, src.Event.Type...),
			Action:    m.Action,
			Severity:  m.Severity,
			RiskScore: float64(m.Severity),
			Dataset:   event.DatasetAlerts,
			Reason:    m.Description,
		},
		Rule: &event.Rule{
			ID: m.RuleID, Name: m.RuleName, Ruleset: m.Ruleset,
			Description: m.Description, Reference: m.Reference,
		},
		Threat: threat(m),
		User:   src.User,
	}
	if len(a.Event.Category) == 0 {
		a.Event.Category = []string{"intrusion_detection"}
	}
	if src.Process != nil {
		p := *src.Process
		if p.Parent != nil {
			pp := *p.Parent
			p.Parent = &pp
		}
		a.Process = &p
	}
	if src.File != nil {
		f := *src.File
		a.File = &f
	}
	return a
}

func threat(m Meta) *event.Threat {
	t := &event.Threat{Framework: "MITRE ATT&CK"}
	for _, tq := range m.Techniques {
		t.Technique.ID = append(t.Technique.ID, tq.ID)
		t.Technique.Name = append(t.Technique.Name, tq.Name)
		t.Technique.Reference = append(t.Technique.Reference, reference(tq.ID))
	}
	if m.Tactic != nil {
		t.Tactic = &event.Tactic{ID: []string{m.Tactic.ID}, Name: []string{m.Tactic.Name}}
	}
	return t
}

// reference is the attack.mitre.org page of a technique id such as T1204.002.
func reference(id string) string {
	base := "https://attack.mitre.org/techniques/"
	for i := range len(id) {
		if id[i] == '.' {
			return base + id[:i] + "/" + id[i+1:] + "/"
		}
	}
	return base + id + "/"
}
