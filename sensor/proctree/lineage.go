package proctree

import (
	"slices"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// MaxDepth bounds every walk up a process chain, from the table or from
// /proc: real chains under a shell or an RMM agent are a few deep, and a
// corrupt chain must not make a walk (or an alert) unbounded.
const MaxDepth = 32

// Up is the one walk up a live process chain read from somewhere other
// than a Table (the /proc reads of the synchronous paths: the file guard,
// kill-switch actions, the RMM lookup), so every such walk ends the same
// way. It calls step with pid, then with the parent pid step returned, and
// so on, nearest first. It stops before pid 1 or any pid <= 0 (init roots
// every chain and is never a candidate), before a pid it has already
// visited (a chain read while processes exit and pids are reused can
// loop), when step returns false, and after MaxDepth calls. Up does no I/O
// itself: step reads what its caller needs.
func Up(pid int, step func(pid int) (parent int, more bool)) {
	var seen [MaxDepth]int
	for n := 0; n < MaxDepth; n++ {
		if pid <= 1 || slices.Contains(seen[:n], pid) {
			return
		}
		seen[n] = pid
		parent, more := step(pid)
		if !more {
			return
		}
		pid = parent
	}
}

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
