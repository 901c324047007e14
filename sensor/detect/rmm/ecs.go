package rmm

import (
	"fmt"
	"slices"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// simple builds an alert of the rule for behaviour b about product prod.
func (d *Detector) simple(b string, ev *event.Event, prod *rmmcat.Product, msg string) pipeline.Detection {
	r := d.rules.byBehaviour(b)
	det := d.detection(r, ev, r.Name+": "+msg)
	tw := ensureTW(&det.Alert)
	tw.RMM = &event.RMM{Product: prod.ID, ProductName: prod.Name, Approved: d.approved[prod.ID], Behaviour: b}
	return det
}

func (d *Detector) detection(r *Rule, ev *event.Event, msg string) pipeline.Detection {
	m := alert.Meta{
		RuleID: r.ID, RuleName: r.Name, Description: r.Description, Ruleset: r.Ruleset,
		Severity: r.Severity, Action: "rmm-" + r.Behaviour,
		Techniques: slices.Clone(r.Technique), Tactic: alert.TacticOf(r.Tactic),
	}
	a := alert.FromEvent(m, ev, msg)
	det := pipeline.Detection{Alert: a, Response: r.Response}
	if det.Response == "" {
		det.Response = event.ActionNone
	}
	return det
}

func ensureTW(a *event.Event) *event.Tillwatch {
	if a.Tillwatch == nil {
		a.Tillwatch = &event.Tillwatch{}
	}
	return a.Tillwatch
}

// lineageAlert is the alert about a descendant of an agent: the first hit
// (rules in file order, strongest first), the agent (tillwatch.rmm.*), the
// chain up to it and, for a kill, the subtree to stop. eff is the name the
// process acts as, renamedFrom the system binary it is a copy of, if any.
func (d *Detector) lineageAlert(ev *event.Event, link *rmmcat.Agent, hits []hit, eff, renamedFrom string) *pipeline.Detection {
	// The first rule in file order is the strongest statement; the others
	// are named in the message so nothing seen is lost.
	h, p := hits[0], ev.Process
	msg := fmt.Sprintf("%s: %s (below %s agent %s pid %d)", h.rule.Name, h.why, link.Product.Name, link.Proc.Executable, link.Proc.PID)
	for _, o := range hits[1:] {
		msg += "; also " + o.rule.ID + ": " + o.why
	}
	det := d.detection(h.rule, ev, msg)
	tw := ensureTW(&det.Alert)
	tw.RMM = &event.RMM{
		Product: link.Product.ID, ProductName: link.Product.Name, Approved: d.approved[link.Product.ID],
		AgentPID: int64(link.Proc.PID), AgentExe: link.Proc.Executable, Behaviour: h.rule.Behaviour,
		Fingerprint: Fingerprint(link.Product.ID, eff, argsAfter0(p)),
	}
	if renamedFrom != "" {
		tw.RMM.EffectiveName = renamedFrom
	}
	proctree.SetLineage(&det.Alert, link.Chain)
	if det.Response == event.ActionKill {
		// Kill the subtree the agent started (the cmd.exe of the Kaseya
		// chain), so the steps still to come die with it; the agent itself
		// only when configured.
		root := proctree.Proc{PID: int(p.PID)}
		if p.Start != nil {
			root.Start = *p.Start
		}
		if len(link.Chain) >= 2 {
			root = link.Chain[len(link.Chain)-2]
		}
		if d.o.KillAgent {
			root = link.Proc
		}
		det.Target = &pipeline.Target{PID: root.PID, Tree: true}
		if !root.Start.IsZero() {
			det.Target.Start = root.Start.UnixMilli()
		}
	}
	return &det
}
