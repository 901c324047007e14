package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
	RuleBurst    = "TW-TAMPER-0011" // a burst of file changes was stopped in the kernel and judged malicious
)

// Event fields of the records the watch emits and turns into alerts.
const (
	Dataset      = "tillwatch.sensor"
	ActionTamper = "kernel-tamper"
	ActionStop   = "kernel-stop"
)

// Tripwires is what the watch needs of the loaded layer.
type Tripwires interface {
	TaintAgent(pid int) error
	Stopped() ([]Stopped, error)
	RunTamper(ctx context.Context, fn func(Tamper)) error
	// Resume lets a stopped process go (SIGCONT); a burst stop's process
	// and family are not counted again for allow.
	Resume(s Stopped, allow time.Duration) error
}

// Judgement is the sensor's decision on a process a tripwire stopped.
type Judgement struct {
	// Kill ends the tree (the alert's response); else the process is
	// resumed.
	Kill bool
	// Why says what decided, for the log and the alert.
	Why string
	// Target is the pid whose tree is killed (0: the stopped process, or
	// for a family's burst its family root).
	Target int
}

// Judge decides on a stopped process. It may wait (bounded) for the
// sensor to catch up on the process's file events; it runs in a goroutine
// of its own per stop.
type Judge func(ctx context.Context, s Stopped) Judgement

// WatchOptions configures a Watch.
type WatchOptions struct {
	Layer Tripwires
	// IsAgent says whether a process (name, executable) is a catalogued
	// remote-management agent; its pid is then tainted in the kernel.
	IsAgent func(name, exe string) bool
	// Process describes pid for an alert (the process table); nil or a
	// nil result leaves only the pid.
	Process func(pid int) *event.Process
	// Wall converts the kernel's CLOCK_MONOTONIC ns to wall time.
	Wall func(ns uint64) time.Time
	// Judge decides on every process a decoy or burst tripwire stopped;
	// nil kills every one (the tree, through the alert's response).
	Judge Judge
	Log   *slog.Logger
}

// Watch is the kernel layer's pipeline component: as a source it turns
// tripwire records (and processes a tripwire stopped while no sensor ran)
// into events; as a detector it taints catalogued agents at their exec and
// turns the records into alerts, asking for a kill of what a decoy stopped.
type Watch struct {
	o       WatchOptions
	verdict *prometheus.CounterVec
	judging chan struct{} // bounds concurrent judgements
	wg      sync.WaitGroup
}

// NewWatch returns the watch.
func NewWatch(o WatchOptions) *Watch {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Wall == nil {
		o.Wall = func(uint64) time.Time { return time.Now() }
	}
	return &Watch{o: o, judging: make(chan struct{}, 16), verdict: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tillwatch_kernel_stops_total",
		Help: "Processes a kernel tripwire stopped (SIGSTOP), per reason and the sensor's verdict: killed, or resumed (honest work, or a decoy's name on another file).",
	}, []string{"reason", "verdict"})}
}

// Collectors returns the watch's metrics for registration.
func (w *Watch) Collectors() []prometheus.Collector { return []prometheus.Collector{w.verdict} }

// Verdicts returns how many stops of reason ended with verdict ("kill",
// "resume").
func (w *Watch) Verdicts(reason Reason, verdict string) float64 {
	var m dto.Metric
	if err := w.verdict.WithLabelValues(reason.String(), verdict).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// Name returns "kernel".
func (w *Watch) Name() string { return "kernel" }

// Run emits one event per process still stopped by a tripwire (the sensor
// was down when it fired), then one per tripwire record, until ctx is done.
func (w *Watch) Run(ctx context.Context, emit func(event.Event)) error {
	st, err := w.o.Layer.Stopped()
	if err != nil {
		return fmt.Errorf("kernel: listing stopped processes: %w", err)
	}
	defer w.wg.Wait()
	seen := map[int]bool{}
	for _, s := range st {
		seen[s.PID] = true
		w.stopped(ctx, s, emit)
	}
	return w.o.Layer.RunTamper(ctx, func(t Tamper) {
		if !t.Reason.Stop() {
			emit(w.event(t))
			return
		}
		if seen[t.PID] {
			delete(seen, t.PID) // reported from the stopped map already
			return
		}
		w.stopped(ctx, Stopped{PID: t.PID, TimeNS: t.TimeNS, Reason: t.Reason, Name: t.Name, Family: t.Family}, emit)
	})
}

// stopped judges a stopped process in a goroutine of its own (a judgement
// may wait for file events), at most cap(judging) at once: beyond that the
// ring reader judges in line, which only delays the next records.
func (w *Watch) stopped(ctx context.Context, s Stopped, emit func(event.Event)) {
	if w.o.Judge == nil {
		emit(w.event(Tamper{Reason: s.Reason, PID: s.PID, TimeNS: s.TimeNS, Name: s.Name, Signal: 19, Family: s.Family}))
		return
	}
	select {
	case w.judging <- struct{}{}:
		w.wg.Add(1)
		go func() {
			defer func() { <-w.judging; w.wg.Done() }()
			w.judge(ctx, s, emit)
		}()
	default:
		w.judge(ctx, s, emit)
	}
}

func (w *Watch) judge(ctx context.Context, s Stopped, emit func(event.Event)) {
	j := w.o.Judge(ctx, s)
	if !j.Kill {
		w.verdict.WithLabelValues(s.Reason.String(), "resume").Inc()
		if err := w.o.Layer.Resume(s, 0); err != nil {
			w.o.Log.Error("could not resume a process a kernel tripwire stopped; let it go with kill -CONT", "pid", s.PID, "error", err)
		}
		w.o.Log.Info("process stopped by a kernel tripwire judged honest and resumed", "pid", s.PID, "reason", s.Reason.String(), "family_root", s.Family, "why", j.Why)
		return
	}
	w.verdict.WithLabelValues(s.Reason.String(), "kill").Inc()
	t := Tamper{Reason: s.Reason, PID: s.PID, TimeNS: s.TimeNS, Name: s.Name, Signal: 19, Family: s.Family}
	ev := w.event(t)
	target := j.Target
	if target == 0 && s.Reason == ReasonBurst && s.Family > 0 {
		target = s.Family
	}
	if target > 0 && target != s.PID {
		if p := w.process(target); p != nil {
			ev.Process = p
		}
	}
	if j.Why != "" {
		ev.Message += "; judged: " + j.Why
	}
	emit(ev)
}

func (w *Watch) process(pid int) *event.Process {
	var p *event.Process
	if w.o.Process != nil {
		p = w.o.Process(pid)
	}
	if p == nil {
		p = &event.Process{PID: int64(pid)}
	}
	return p
}

func (w *Watch) event(t Tamper) event.Event {
	action, cat := ActionTamper, []string{"process"}
	if t.Reason.Stop() {
		action = ActionStop
	}
	p := w.process(t.PID)
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
	case ReasonBurst:
		if t.Family > 0 {
			return fmt.Sprintf("process %d was stopped in the kernel: its family (root pid %d) crossed the burst threshold of file changes in the guarded folders (last: %q)", t.PID, t.Family, t.Name)
		}
		return fmt.Sprintf("process %d was stopped in the kernel: it crossed the burst threshold of file changes in the guarded folders (last: %q)", t.PID, t.Name)
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
			}
		}
		return nil
	case ev.Event.Dataset != Dataset || (ev.Event.Action != ActionTamper && ev.Event.Action != ActionStop):
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
	default:
		m.RuleID, m.RuleName, m.Ruleset, m.Severity = RuleDecoy, "Decoy touched: process stopped in the kernel", event.RulesetRansomware, 80
		if ev.Event.Reason == ReasonBurst.String() {
			m.RuleID, m.RuleName = RuleBurst, "Burst of file changes stopped in the kernel and judged malicious"
		}
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
