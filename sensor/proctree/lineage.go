package proctree

import (
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// MaxDepth bounds every walk up a process chain, from the table or from
// /proc: real chains under a shell or an RMM agent are a few deep, and a
// corrupt chain must not make a walk (or an alert) unbounded.
const MaxDepth = 32

// SetLineage writes chain (ancestors, nearest first, as Ancestry returns
// it) into alert a: tillwatch.process.ancestry, and process.parent when the
// event did not name the parent. It is the one conversion from the table
// to ECS, used by the enricher and by detectors that already hold a chain.
// a.Process must be set; an empty chain changes nothing.
func SetLineage(a *event.Event, chain []Proc) {
	if len(chain) == 0 {
		return
	}
	anc := make([]event.Ancestor, 0, len(chain))
	for _, p := range chain {
		anc = append(anc, event.Ancestor{PID: int64(p.PID), Name: p.Name, Executable: p.Executable,
			CommandLine: p.CommandLine, Start: startPtr(p.Start), Exited: p.Exited})
	}
	if a.Tillwatch == nil {
		a.Tillwatch = &event.Tillwatch{}
	}
	if a.Tillwatch.Process == nil {
		a.Tillwatch.Process = &event.ProcessContext{}
	}
	a.Tillwatch.Process.Ancestry = anc
	if a.Process.Parent == nil || a.Process.Parent.Name == "" {
		p := chain[0]
		a.Process.Parent = &event.ParentProcess{PID: int64(p.PID), Name: p.Name, Executable: p.Executable,
			CommandLine: p.CommandLine, Args: p.Args, Start: startPtr(p.Start)}
	}
}

// startPtr is nil for an unknown (zero) start, so it is left out of JSON.
func startPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
