package sigma

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"sync/atomic"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// Action is event.action of a Sigma alert.
const Action = "sigma-match"

// Matches reports whether ev matches r, through the same category and
// field mapping as the detector (the rule's product is not checked).
func (r *Rule) Matches(ev *event.Event) (bool, error) {
	if r.NotApplicable != "" {
		return false, fmt.Errorf("rule %s is not applicable: %s", r.ID, r.NotApplicable)
	}
	cat := categoryOf(ev)
	if cat != r.Category {
		return false, nil
	}
	return r.matchRecord(values(cat, ev)), nil
}

// Detector implements pipeline.Detector: every rule of an event's category
// is evaluated on it; each matching rule is one alert.
type Detector struct {
	byCat map[string][]*Rule
	// errs counts evaluation errors: matchers are compiled at load, so
	// evaluation cannot fail and this stays 0; kept for the metric.
	errs atomic.Uint64
}

// New returns a detector for rules on a host running goos: rules for
// another product (logsource.product windows on linux) and rules that are
// not applicable are left out (Rule.Skip says why).
func New(rules []*Rule, goos string) *Detector {
	d := &Detector{byCat: map[string][]*Rule{}}
	for _, r := range rules {
		if r.Skip(goos) != "" {
			continue
		}
		d.byCat[r.Category] = append(d.byCat[r.Category], r)
	}
	return d
}

// Name implements pipeline.Detector.
func (d *Detector) Name() string { return "sigma" }

// Rules is the number of rules the detector evaluates.
func (d *Detector) Rules() int {
	n := 0
	for _, rs := range d.byCat {
		n += len(rs)
	}
	return n
}

// Errors is the number of evaluations the engine failed.
func (d *Detector) Errors() uint64 { return d.errs.Load() }

// Detect implements pipeline.Detector.
func (d *Detector) Detect(ev *event.Event) []pipeline.Detection {
	cat := categoryOf(ev)
	rs := d.byCat[cat]
	if len(rs) == 0 {
		return nil
	}
	vals := values(cat, ev)
	var out []pipeline.Detection
	for _, r := range rs {
		if r.matchRecord(vals) {
			out = append(out, pipeline.Detection{Alert: r.alert(ev)})
		}
	}
	return out
}

func (r *Rule) alert(ev *event.Event) event.Event {
	m := alert.Meta{
		RuleID: r.ID, RuleName: r.Title, Description: r.Description, Ruleset: event.RulesetSigma,
		Reference: r.Reference, Severity: r.Severity, Tactic: r.Tactic, Action: Action,
	}
	for _, t := range r.Techniques {
		m.Techniques = append(m.Techniques, alert.Technique{ID: t})
	}
	what := ""
	switch {
	case r.Category == CategoryFile && ev.File != nil:
		what = ev.File.Path
	case ev.Process != nil:
		what = ev.Process.CommandLine
		if what == "" {
			what = ev.Process.Executable
		}
	}
	a := alert.FromEvent(m, ev, r.Title+": "+what)
	a.Rule.Author = r.Authors
	a.Rule.Category = r.Category
	// Sigma tags carry technique ids only; no list of empty names.
	if a.Threat != nil {
		a.Threat.Technique.Name = nil
	}
	return a
}

// readSample decodes one sample: an ECS event as JSON, strictly, so a
// misspelt field fails instead of leaving the sample empty.
func readSample(fsys fs.FS, name string) (event.Event, error) {
	var ev event.Event
	raw, err := fs.ReadFile(fsys, name)
	if err != nil {
		return ev, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("not an ECS event: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return ev, fmt.Errorf("more than one JSON value")
	}
	return ev, nil
}
