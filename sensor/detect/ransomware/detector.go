package ransomware

import (
	"fmt"
	"slices"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// DatasetVerdict is event.dataset of the verdict events the file guard
// emits; the detector turns each into one alert.
const DatasetVerdict = "tillwatch.ransomware"

// Verdict event actions.
const (
	ActionBehaviour = "encryption-behaviour"
	ActionCanary    = "canary-tampered"
)

// VerdictEvent builds the event the guard emits for v. trigger is the file
// event that crossed the threshold (its process and file are copied); the
// file group is replaced by the first affected file. stopped lists the
// pids the guard stopped and response what it did (nil in monitor mode:
// the responder then acts, or records that it would have).
func VerdictEvent(v Verdict, trigger *event.Event, stopped []int, response *event.Response) event.Event {
	ev := event.Event{
		Timestamp: time.Now().UTC(),
		Event: event.Meta{
			Kind: event.KindEvent, ID: event.NewID(), Category: []string{"file", "malware"}, Type: []string{"info"},
			Action: ActionBehaviour, Dataset: DatasetVerdict, Module: "ransomware",
		},
		Process: trigger.Process,
		File:    trigger.File,
		Tillwatch: &event.Tillwatch{
			FilesAffected: v.Total,
			Response:      response,
			Ransomware:    &event.Ransomware{Score: v.Score, Reasons: v.Reasons, Files: v.Files, Canary: v.Canary, TreePID: v.Tree, Stopped: stopped},
		},
	}
	if v.Spawner != nil {
		ev.Tillwatch.Ransomware.FamilyRoot = v.Spawner.Name
		ev.Tillwatch.Ransomware.FamilyWorkers = v.Workers
	}
	if v.RMM != nil {
		ev.Tillwatch.RMM = &event.RMM{Product: v.RMM.Product, ProductName: v.RMM.ProductName, Approved: v.RMM.Approved,
			AgentPID: int64(v.RMM.PID), AgentExe: v.RMM.Executable}
	}
	if v.Canary {
		ev.Event.Action = ActionCanary
	}
	if len(v.Files) > 0 && ev.File != nil && ev.File.Path != v.Files[0] {
		f := *ev.File
		f.Path = v.Files[0]
		ev.File = &f
	}
	return ev
}

// Detector implements pipeline.Detector: it turns verdict events into
// alerts with rule.ruleset "ransomware".
type Detector struct{ r *Rules }

// NewDetector returns a detector using r's alert metadata.
func NewDetector(r *Rules) *Detector { return &Detector{r: r} }

// Name implements pipeline.Detector.
func (d *Detector) Name() string { return "ransomware" }

// Detect implements pipeline.Detector.
func (d *Detector) Detect(ev *event.Event) []pipeline.Detection {
	if ev.Event.Kind != event.KindEvent || ev.Event.Dataset != DatasetVerdict || ev.Tillwatch == nil || ev.Tillwatch.Ransomware == nil {
		return nil
	}
	rw := ev.Tillwatch.Ransomware
	meta := d.r.Behaviour
	if rw.Canary {
		meta = d.r.Canary
	}
	m := alert.Meta{RuleID: meta.ID, RuleName: meta.Name, Description: meta.Description, Ruleset: event.RulesetRansomware,
		Severity: meta.Severity, Action: ev.Event.Action, Tactic: &alert.Technique{ID: "TA0040", Name: "Impact"},
		Techniques: slices.Clone(meta.Technique)}
	first := ""
	if ev.File != nil {
		first = ev.File.Path
	}
	msg := fmt.Sprintf("%s: %d files affected, first %s (score %d)", meta.Name, ev.Tillwatch.FilesAffected, first, rw.Score)
	if rw.FamilyRoot != "" {
		msg += fmt.Sprintf("; scored and stopped at family root %s (pid %d, %d workers)", rw.FamilyRoot, rw.TreePID, rw.FamilyWorkers)
	}
	if r := ev.Tillwatch.RMM; r != nil {
		msg += fmt.Sprintf("; the process tree descends from RMM agent %s (pid %d)", r.Product, r.AgentPID)
	}
	a := alert.FromEvent(m, ev, msg)
	rwc := *rw
	a.Tillwatch = &event.Tillwatch{FilesAffected: ev.Tillwatch.FilesAffected, Ransomware: &rwc}
	if ev.Tillwatch.RMM != nil {
		// The tree descends from an RMM agent: say which (tillwatch.rmm.*).
		r := *ev.Tillwatch.RMM
		a.Tillwatch.RMM = &r
	}
	det := pipeline.Detection{Alert: a}
	if ev.Tillwatch.Response != nil {
		// The guard already acted synchronously; record it, act no more.
		resp := *ev.Tillwatch.Response
		a.Tillwatch.Response = &resp
		det.Alert = a
		return []pipeline.Detection{det}
	}
	if rw.TreePID > 0 {
		det.Response = event.ActionKill
		det.Target = &pipeline.Target{PID: rw.TreePID, Tree: true}
	}
	return []pipeline.Detection{det}
}
