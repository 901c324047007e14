package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/procclock"
)

// unreportedAfter is how long a starting watch lets the ring's backlog be
// read before it reports the hostile families no alert was made of.
const unreportedAfter = 3 * time.Second

// reasonUnreported: a family declared hostile without an alert (the watch's
// own reason; the kernel never writes it).
const reasonUnreported Reason = 6

// familyLabel carries a record's family from the watch's event to its alert.
const familyLabel = "kernel_family"

// Rule ids of the kernel layer's alerts.
const (
	RuleSignal     = "TW-TAMPER-0001" // a process under an RMM agent signalled the sensor
	RuleToolExec   = "TW-TAMPER-0002" // ... exec'd a tool against the sensor
	RulePath       = "TW-TAMPER-0003" // ... wrote, renamed or removed a sensor file
	RulePidfd      = "TW-TAMPER-0004" // ... opened a pidfd on the sensor
	RuleSurvivor   = "TW-TAMPER-0005" // a member of a family that attacked the sensor, alive when the sensor starts
	RuleUnreported = "TW-TAMPER-0006" // a family attacked the sensor and no alert of it was journaled
	RuleDecoy      = "TW-TAMPER-0010" // a process touched a decoy and was stopped in the kernel
	RuleFresh      = "TW-TAMPER-0020" // a process under an RMM agent ran a file its tree made; stopped at exec, judged hostile
	RuleFreshLet   = "TW-TAMPER-0021" // ... judged honest (a deployment) and let go
	RuleBurst      = "TW-TAMPER-0011" // a burst of file changes was stopped in the kernel and judged malicious
	RuleHandle     = "TW-TAMPER-0007" // a process under an RMM agent opened a file by handle for writing; stopped, judged hostile
	RuleIOUring    = "TW-TAMPER-0008" // a process under an RMM agent made an io_uring call; stopped, judged hostile
	RuleReach      = "TW-TAMPER-0009" // ... ptrace-attached to, wrote the memory of or set a resource limit on the sensor
	RuleBPF        = "TW-TAMPER-0012" // ... asked for a handle on a loaded BPF object (the tripwires are ones)
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
	HostileMembers() ([]int, error)
	HostileFamilies() ([]Hostile, error)
	MarkReported(family int) error
	RunTamper(ctx context.Context, fn func(Tamper)) error
	// Fresh, Forget and Judged serve the fresh-exec judgement: what the
	// kernel recorded of a file, forgetting a file let run, clearing a
	// stopped entry.
	Fresh(base string) (FreshFile, bool)
	Forget(base string) error
	Judged(pid int) error
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
	// InScope, when set, says whether an agent's pid may be marked
	// (response.only_under); nil: every agent is.
	InScope func(pid int) bool
	// Process describes pid for an alert (the process table); nil or a
	// nil result leaves only the pid.
	Process func(pid int) *event.Process
	// Wall converts the kernel's CLOCK_MONOTONIC ns to wall time (default:
	// against the clocks now).
	Wall func(ns uint64) time.Time

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

	// BootID names this boot (/proc/sys/kernel/random/boot_id): an
	// attack's alert id is derived from it and the family, so the same
	// attack reported twice (live, and again at start when the sensor
	// was killed before it could journal it) is stored once.
	BootID string

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
	tools   toolIndex
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
		o.Wall = procclock.MonotonicToWall
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
	if o.BootID == "" {
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		o.BootID = strings.TrimSpace(string(b))
	}
	return &Watch{o: o, tools: toolIndex{dirs: systemDirs}, judging: make(chan struct{}, 16), verdict: prometheus.NewCounterVec(prometheus.CounterOpts{
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

// SetScanFile hands the watch a YARA scan for the fresh-exec judgement
// (the rules a file matches); call it before Run.
func (w *Watch) SetScanFile(fn func(path string) ([]string, error)) { w.o.ScanFile = fn }

// Name returns "kernel".
func (w *Watch) Name() string { return "kernel" }

// Run emits one event per process still stopped by a tripwire (the sensor
// was down when it fired) and one per survivor of a hostile family, then
// one per tripwire record, until ctx is done.
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
	defer w.wg.Wait()
	seen := map[int]bool{}
	for _, s := range st {
		seen[s.PID] = true
		if s.Reason.Fresh() {
			emit(w.judgeFresh(ctx, Tamper{Reason: s.Reason, PID: s.PID, TimeNS: s.TimeNS, Name: s.Name, Signal: 19}))
			continue
		}
		w.stopped(ctx, s, emit)
	}
	// A family that attacked the sensor dies at its members' next syscall
	// of interest; a member that makes none (left stopped by a tree kill
	// the previous run did not finish when it was killed, or asleep) is
	// judged here.
	hm, err := w.o.Layer.HostileMembers()
	if err != nil {
		return fmt.Errorf("kernel: listing hostile families: %w", err)
	}
	for _, pid := range hm {
		if !seen[pid] {
			emit(w.event(Tamper{Reason: ReasonHostile, PID: pid, Signal: 9}))
		}
	}
	// An attack whose record the previous run read but did not live to
	// journal (the signal that killed it came with the record) has no
	// alert: once the ring's backlog had its moment, the families still
	// unreported are reported, under the same alert id a live record of
	// theirs gets (the collector stores the attack once).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(unreportedAfter):
		}
		hf, err := w.o.Layer.HostileFamilies()
		if err != nil {
			w.o.Log.Warn("could not list hostile families; an attack the previous run did not report stays unreported", "error", err)
			return
		}
		for _, h := range hf {
			emit(w.event(Tamper{Reason: reasonUnreported, PID: h.Family, Family: h.Family, TimeNS: h.TimeNS}))
		}
	}()
	return w.o.Layer.RunTamper(ctx, func(t Tamper) {
		if !t.Reason.Stops() {
			emit(w.event(t))
			return
		}
		if seen[t.PID] {
			delete(seen, t.PID) // reported from the stopped map already
			return
		}
		if t.Reason.Fresh() {
			emit(w.judgeFresh(ctx, t))
			return
		}
		w.stopped(ctx, Stopped{PID: t.PID, TimeNS: t.TimeNS, Reason: t.Reason, Name: t.Name, Family: t.Family}, emit)
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
	if t.Reason.Stops() {
		action = ActionStop
	}
	p := w.process(t.PID)
	var labels map[string]string
	if t.Family != 0 && !t.Reason.Stops() && t.Reason != ReasonHostile {
		labels = map[string]string{familyLabel: strconv.Itoa(t.Family)}
	}
	return event.Event{
		Labels:    labels,
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
	case ReasonReach:
		if t.Target == 0 {
			return fmt.Sprintf("process %d under a remote-management agent copied another process's descriptors (pidfd_getfd; the sensor's would detach or rewrite the tripwires); killed in the kernel, its process family poisoned", t.PID)
		}
		if t.Name != "" {
			return fmt.Sprintf("process %d under a remote-management agent opened the sensor's /proc/%d/%s; killed in the kernel, its process family poisoned", t.PID, t.Target, t.Name)
		}
		return fmt.Sprintf("process %d under a remote-management agent reached into the sensor (pid %d: ptrace attach, memory write, resource limit or scheduling); killed in the kernel, its process family poisoned", t.PID, t.Target)
	case ReasonBPF:
		return fmt.Sprintf("process %d under a remote-management agent asked for a handle on a loaded BPF object (bpf command %d; the tripwires are such objects); killed in the kernel, its process family poisoned", t.PID, t.Signal)
	case ReasonExecTool:
		return fmt.Sprintf("process %d under a remote-management agent ran a tool naming the sensor (%q); killed at exec, its process family poisoned", t.PID, t.Name)
	case ReasonPath:
		return fmt.Sprintf("process %d under a remote-management agent wrote, renamed or removed a sensor path (%q); killed, its process family poisoned", t.PID, t.Name)
	case reasonUnreported:
		return fmt.Sprintf("the process family %d under a remote-management agent attacked the sensor (signal, tool, file or pidfd); it was killed in the kernel and poisoned, and the sensor was killed before it could report it", t.Family)
	case ReasonHostile:
		return fmt.Sprintf("process %d belongs to a process family that attacked the sensor and was still alive when the sensor started (stopped or idle)", t.PID)
	case ReasonHandleWrite:
		return fmt.Sprintf("process %d under a remote-management agent opened a file by handle for writing (open_by_handle_at, past every path check) and was stopped in the kernel", t.PID)
	case ReasonIOUring:
		return fmt.Sprintf("process %d under a remote-management agent made an io_uring call (a ring's opens, writes, renames and unlinks pass every path check) and was stopped in the kernel", t.PID)
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
		if w.o.IsAgent != nil && w.o.IsAgent(ev.Process.Name, ev.Process.Executable) && (w.o.InScope == nil || w.o.InScope(int(ev.Process.PID))) {
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
	case ReasonReach.String():
		m.RuleID, m.RuleName = RuleReach, "Process under an RMM agent reached into the sensor (ptrace, memory, resource limit, scheduling or descriptors)"
	case ReasonBPF.String():
		m.RuleID, m.RuleName = RuleBPF, "Process under an RMM agent took a handle on a loaded BPF object"
	case ReasonHandleWrite.String(), ReasonIOUring.String():
		m.RuleID, m.RuleName = RuleHandle, "Process under an RMM agent wrote a file by handle (past every path check)"
		if ev.Event.Reason == ReasonIOUring.String() {
			m.RuleID, m.RuleName = RuleIOUring, "Process under an RMM agent used io_uring (past every path check)"
		}
		if ev.Event.Action == ActionStop {
			// The kernel stopped it; the sensor's judgement is the tree's end.
			d.Response = event.ActionKill
			d.Target = &pipeline.Target{PID: int(ev.Process.PID), Tree: true}
			if ev.Process.Start != nil {
				d.Target.Start = ev.Process.Start.UnixMilli()
			}
		}
	case reasonUnreported.String():
		m.RuleID, m.RuleName = RuleUnreported, "Process family under an RMM agent attacked the sensor (reported at the next start)"
	case ReasonHostile.String():
		m.RuleID, m.RuleName = RuleSurvivor, "Survivor of a process family that attacked the sensor"
		d.Response = event.ActionKill
		d.Target = &pipeline.Target{PID: int(ev.Process.PID), Tree: true}
		if ev.Process.Start != nil {
			d.Target.Start = ev.Process.Start.UnixMilli()
		}
	case ReasonFreshExec.String(), ReasonFreshHandoff.String():
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
	if fam, err := strconv.Atoi(ev.Labels[familyLabel]); err == nil && fam != 0 {
		// One attack, one alert id: live or reported at the next start.
		sum := sha256.Sum256([]byte("tillwatch-kernel-tamper|" + w.o.BootID + "|" + strconv.Itoa(fam)))
		d.Alert.Event.ID = hex.EncodeToString(sum[:16])
		if err := w.o.Layer.MarkReported(fam); err != nil {
			w.o.Log.Warn("could not mark a hostile family reported; it is reported again at the next start", "family", fam, "error", err)
		}
	}
	return []pipeline.Detection{d}
}
