package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// Rule ids of the kernel layer's alerts.
const (
	RuleSignal   = "TW-TAMPER-0001" // a process under an RMM agent signalled the sensor
	RuleToolExec = "TW-TAMPER-0002" // ... exec'd a tool against the sensor
	RulePath     = "TW-TAMPER-0003" // ... wrote, renamed or removed a sensor file
	RulePidfd    = "TW-TAMPER-0004" // ... opened a pidfd on the sensor
	RuleDecoy    = "TW-TAMPER-0010" // a process touched a decoy and was stopped in the kernel
	RuleFresh    = "TW-TAMPER-0020" // a process under an RMM agent ran a file its tree made; stopped at exec, judged hostile
	RuleFreshLet = "TW-TAMPER-0021" // ... judged honest (a deployment) and let go
)

// Event fields of the records the watch emits and turns into alerts.
const (
	Dataset      = "tillwatch.sensor"
	ActionTamper = "kernel-tamper"
	ActionStop   = "kernel-stop"
	// ActionRelease: a stopped process judged honest and let go.
	ActionRelease = "kernel-release"
)

// Tripwires is what the watch needs of the loaded layer.
type Tripwires interface {
	TaintAgent(pid int) error
	TaintChild(pid, family int) error
	Stopped() ([]Stopped, error)
	RunTamper(ctx context.Context, fn func(Tamper)) error
	// Fresh, Forget and Judged serve the fresh-exec judgement: what the
	// kernel recorded of a file, forgetting a file let run, clearing a
	// stopped entry.
	Fresh(base string) (FreshFile, bool)
	Forget(base string) error
	Judged(pid int) error
}

// WatchOptions configures a Watch.
type WatchOptions struct {
	Layer Tripwires
	// IsAgent says whether a process (name, executable) is a catalogued
	// remote-management agent; its pid is then tainted in the kernel.
	IsAgent func(name, exe string) bool
	// Process describes pid for an alert (the process table); nil or a
	// nil result leaves only the pid.
	Process func(pid int) *event.Process
	// Wall converts the kernel's CLOCK_MONOTONIC ns to wall time (default:
	// against the clocks now).
	Wall func(ns uint64) time.Time
	Log  *slog.Logger

	// The fresh-exec judgement (JudgeFresh). ProcRoot is where the stopped
	// process is read (default "/proc"). Approved says whether pid is
	// under an approved RMM agent (nil: none is). ScanFile returns the YARA
	// rules a file matches (nil: no YARA). FeedAt returns the kernel time
	// up to which the process table is current, so the writer's exec is
	// known before it is judged (nil: judge at once); FeedWait bounds that
	// wait (default 2 s).
	ProcRoot string
	Approved func(pid int) bool
	ScanFile func(path string) ([]string, error)
	FeedAt   func() uint64
	FeedWait time.Duration

	// Drops returns the kernel's ring drop counters; Health is told when
	// they grow (checked every DropsEvery, default 10 s). Either nil: not
	// watched.
	Drops      func() (RingDrops, error)
	Health     func(component, state, reason string)
	DropsEvery time.Duration
}

// Watch is the kernel layer's pipeline component: as a source it turns
// tripwire records (and processes a tripwire stopped while no sensor ran)
// into events; as a detector it taints catalogued agents at their exec and
// turns the records into alerts, asking for a kill of what a decoy stopped.
type Watch struct {
	o     WatchOptions
	tools toolIndex
}

// NewWatch returns the watch.
func NewWatch(o WatchOptions) *Watch {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Wall == nil {
		o.Wall = defaultWall
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.FeedWait <= 0 {
		o.FeedWait = 2 * time.Second
	}
	if o.DropsEvery <= 0 {
		o.DropsEvery = 10 * time.Second
	}
	return &Watch{o: o, tools: toolIndex{dirs: systemDirs}}
}

// SetScanFile hands the watch a YARA scan for the fresh-exec judgement
// (the rules a file matches); call it before Run.
func (w *Watch) SetScanFile(fn func(path string) ([]string, error)) { w.o.ScanFile = fn }

// Name returns "kernel".
func (w *Watch) Name() string { return "kernel" }

// Run emits one event per process still stopped by a tripwire (the sensor
// was down when it fired), then one per tripwire record, until ctx is done.
func (w *Watch) Run(ctx context.Context, emit func(event.Event)) error {
	st, err := w.o.Layer.Stopped()
	if err != nil {
		return fmt.Errorf("kernel: listing stopped processes: %w", err)
	}
	if w.o.Drops != nil && w.o.Health != nil {
		go w.watchDrops(ctx)
	}
	// Fingerprint the system tools now, not at the first judgement, which
	// must be quick.
	go w.tools.once.Do(w.tools.build)
	seen := map[int]bool{}
	for _, s := range st {
		seen[s.PID] = true
		t := Tamper{Reason: s.Reason, PID: s.PID, TimeNS: s.TimeNS, Name: s.Name, Signal: 19}
		if t.Reason == ReasonFreshExec {
			emit(w.judgeFresh(ctx, t))
			continue
		}
		emit(w.event(t))
	}
	return w.o.Layer.RunTamper(ctx, func(t Tamper) {
		if t.Reason.Stops() && seen[t.PID] {
			delete(seen, t.PID) // reported from the stopped map already
			return
		}
		if t.Reason == ReasonFreshExec {
			emit(w.judgeFresh(ctx, t))
			return
		}
		emit(w.event(t))
	})
}

// watchDrops reports a health event whenever the kernel dropped records
// because a ring was full (the reader fell behind, or no sensor read).
func (w *Watch) watchDrops(ctx context.Context) {
	var last RingDrops
	first := true
	tk := time.NewTicker(w.o.DropsEvery)
	defer tk.Stop()
	for {
		d, err := w.o.Drops()
		switch {
		case err != nil:
			w.o.Log.Warn("could not read the kernel's ring drop counters", "error", err)
		case d.Process > last.Process || d.Tamper > last.Tamper:
			// The first look reports drops from before this run too: the
			// counters are pinned and count while no sensor reads.
			w.o.Health("kernel", event.HealthDegraded, fmt.Sprintf("kernel rings full: %d process and %d tripwire records dropped (%d and %d in all%s); see tillwatch_kernel_ring_drops_total",
				d.Process-last.Process, d.Tamper-last.Tamper, d.Process, d.Tamper, map[bool]string{true: ", some while no sensor read them", false: ""}[first]))
			last = d
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

func (w *Watch) event(t Tamper) event.Event {
	action, cat := ActionTamper, []string{"process"}
	if t.Reason.Stops() {
		action = ActionStop
	}
	var p *event.Process
	if w.o.Process != nil {
		p = w.o.Process(t.PID)
	}
	if p == nil {
		p = &event.Process{PID: int64(t.PID)}
	}
	return event.Event{
		Timestamp: w.o.Wall(t.TimeNS).UTC(),
		Message:   describe(t),
		Event: event.Meta{Kind: event.KindEvent, ID: event.NewID(), Category: cat, Type: []string{"denied"},
			Action: action, Dataset: Dataset, Module: "kernel", Reason: t.Reason.String()},
		Process: p,
	}
}

func describe(t Tamper) string {
	switch t.Reason {
	case ReasonSignal:
		return fmt.Sprintf("process %d under a remote-management agent sent signal %d to the sensor (pid %d); killed in the kernel, its process family poisoned", t.PID, t.Signal, t.Target)
	case ReasonPidfd:
		return fmt.Sprintf("process %d under a remote-management agent opened a pidfd on the sensor (pid %d); killed in the kernel, its process family poisoned", t.PID, t.Target)
	case ReasonExecTool:
		return fmt.Sprintf("process %d under a remote-management agent ran a tool naming the sensor (%q); killed at exec, its process family poisoned", t.PID, t.Name)
	case ReasonPath:
		return fmt.Sprintf("process %d under a remote-management agent wrote, renamed or removed a sensor path (%q); killed, its process family poisoned", t.PID, t.Name)
	}
	return fmt.Sprintf("process %d touched the decoy %q (%s) and was stopped in the kernel", t.PID, t.Name, t.Reason)
}

// Detect implements pipeline.Detector.
func (w *Watch) Detect(ev *event.Event) []pipeline.Detection {
	switch {
	case ev.Event.Dataset == event.DatasetProcess && ev.Event.Action == "exec" && ev.Process != nil:
		if w.o.IsAgent != nil && w.o.IsAgent(ev.Process.Name, ev.Process.Executable) {
			if err := w.o.Layer.TaintAgent(int(ev.Process.PID)); err != nil {
				w.o.Log.Warn("could not mark an RMM agent in the kernel; its tree is not guarded", "pid", ev.Process.PID, "error", err)
			} else {
				w.taintDescendants(int(ev.Process.PID))
			}
		}
		return nil
	case ev.Event.Dataset != Dataset || (ev.Event.Action != ActionTamper && ev.Event.Action != ActionStop && ev.Event.Action != ActionRelease):
		return nil
	}
	m := alert.Meta{
		Ruleset: event.RulesetIntegrity, Severity: 90, Action: ev.Event.Action,
		Techniques: []alert.Technique{{ID: "T1562.001", Name: "Impair Defenses: Disable or Modify Tools"}},
		Tactic:     &alert.Technique{ID: "TA0005", Name: "Defense Evasion"},
	}
	d := pipeline.Detection{}
	switch ev.Event.Reason {
	case ReasonSignal.String():
		m.RuleID, m.RuleName = RuleSignal, "Process under an RMM agent signalled the sensor"
	case ReasonExecTool.String():
		m.RuleID, m.RuleName = RuleToolExec, "Process under an RMM agent ran a tool against the sensor"
	case ReasonPath.String():
		m.RuleID, m.RuleName = RulePath, "Process under an RMM agent wrote a sensor file"
	case ReasonPidfd.String():
		m.RuleID, m.RuleName = RulePidfd, "Process under an RMM agent opened a pidfd on the sensor"
	case ReasonFreshExec.String():
		m.Techniques = []alert.Technique{{ID: "T1140", Name: "Deobfuscate/Decode Files or Information"}, {ID: "T1072", Name: "Software Deployment Tools"}}
		m.Tactic = &alert.Technique{ID: "TA0002", Name: "Execution"}
		if ev.Event.Action == ActionRelease {
			// Honest work let go: an info-level record, no response.
			m.RuleID, m.RuleName, m.Ruleset, m.Severity = RuleFreshLet, "File made under an RMM agent run after a check: let go", event.RulesetRMM, 10
			break
		}
		m.RuleID, m.RuleName, m.Ruleset, m.Severity = RuleFresh, "File made under an RMM agent stopped at exec: judged hostile", event.RulesetRMM, 90
		d.Response = event.ActionKill
		d.Target = &pipeline.Target{PID: int(ev.Process.PID), Tree: true}
		if ev.Process.Start != nil {
			d.Target.Start = ev.Process.Start.UnixMilli()
		}
	default:
		m.RuleID, m.RuleName, m.Ruleset, m.Severity = RuleDecoy, "Decoy touched: process stopped in the kernel", event.RulesetRansomware, 80
		m.Techniques = []alert.Technique{{ID: "T1486", Name: "Data Encrypted for Impact"}}
		m.Tactic = &alert.Technique{ID: "TA0040", Name: "Impact"}
		// The kernel stopped it; the sensor's judgement is the tree's end.
		d.Response = event.ActionKill
		d.Target = &pipeline.Target{PID: int(ev.Process.PID), Tree: true}
		if ev.Process.Start != nil {
			d.Target.Start = ev.Process.Start.UnixMilli()
		}
	}
	m.Description = "A kernel tripwire fired: " + ev.Message
	d.Alert = alert.FromEvent(m, ev, ev.Message)
	d.Alert.Event.Reason = ev.Event.Reason
	return []pipeline.Detection{d}
}
