// Package yara is the YARA detector: it scans every executed binary (once
// per sha256), new and changed executables and scripts reported by the
// file-activity source, the memory of processes other components ask
// about, and on-demand sweeps, and raises alerts with rule.ruleset "yara".
//
// The seam: Detect must be fast, so it only queues scan jobs for a bounded
// worker pool and returns detections whose scans have finished. Workers run
// inside Run (the detector is also a pipeline.Source); when a scan matches,
// the worker parks the detection and emits a telemetry event
// (event.action "yara-match") that wakes the detector, whose Detect then
// returns the parked detections so they are enriched, responded to and
// delivered like any other. Parked detections are also returned with any
// later event, so a dropped wake-up delays an alert, never loses it.
package yara

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	yr "github.com/tillwatch/tillwatch/sensor/yara"
)

// Name is the detector's and the source's name.
const Name = "yara"

// ActionMatch is event.action of the wake-up telemetry and of the alerts.
const ActionMatch = "yara-match"

// Options configure the detector.
type Options struct {
	Engine  *yr.Engine
	Workers int // scan goroutines (default 1: a till has few cores)
	Queue   int // pending scan jobs; more are dropped and reported (default 256)
	// Sweep bounds the CPU of sweeps (ScanPaths).
	Sweep      yr.SweepOptions
	Log        *slog.Logger
	Registerer prometheus.Registerer
	Health     event.HealthFunc
}

type job struct {
	path string       // file to scan
	pid  int          // or process memory to scan
	ev   *event.Event // the triggering event (copied), for the alert
}

// Detector implements pipeline.Detector and pipeline.Source.
type Detector struct {
	o       Options
	jobs    chan job
	mu      sync.Mutex
	parked  []pipeline.Detection
	nparked atomic.Int64
	// parkedSig tells Run that detections were parked: it then repeats
	// the wake-up every second while any wait, and has no timer otherwise.
	parkedSig chan struct{}
	dropped   prometheus.Counter
	emit      atomic.Pointer[func(event.Event)]
}

// New returns a detector scanning with o.Engine.
func New(o Options) (*Detector, error) {
	if o.Engine == nil {
		return nil, fmt.Errorf("yara detector: no engine")
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Health == nil {
		o.Health = event.NoHealth
	}
	d := &Detector{o: o, jobs: make(chan job, o.Queue), parkedSig: make(chan struct{}, 1)}
	d.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_yara_jobs_dropped_total", Help: "YARA scan jobs dropped because the scan queue was full."})
	if err := o.Registerer.Register(d.dropped); err != nil {
		return nil, fmt.Errorf("yara detector metrics: %w", err)
	}
	return d, nil
}

// Name implements pipeline.Detector and pipeline.Source.
func (d *Detector) Name() string { return Name }

// scriptExt are the file extensions scanned on close-write besides
// executables (any file with an execute bit is scanned too).
var scriptExt = map[string]bool{".sh": true, ".py": true, ".pl": true, ".ps1": true, ".bat": true, ".cmd": true,
	".vbs": true, ".js": true, ".exe": true, ".dll": true, ".so": true, ".elf": true, ".bin": true, ".jar": true}

// Detect implements pipeline.Detector: it returns parked detections and
// queues a scan for exec events and for written executables and scripts.
func (d *Detector) Detect(ev *event.Event) []pipeline.Detection {
	var out []pipeline.Detection
	if d.nparked.Load() > 0 {
		d.mu.Lock()
		out, d.parked = d.parked, nil
		d.nparked.Store(0)
		d.mu.Unlock()
	}
	if ev.Event.Kind != event.KindEvent {
		return out
	}
	switch {
	case ev.Event.Action == "exec" && ev.Process != nil && ev.Process.Executable != "":
		d.enqueue(job{path: ev.Process.Executable, ev: copyEvent(ev)})
	case (ev.Event.Action == "close-write" || ev.Event.Action == "create") && ev.File != nil && wanted(ev.File.Path):
		d.enqueue(job{path: ev.File.Path, ev: copyEvent(ev)})
	}
	return out
}

// wanted reports whether a written file is worth a scan: scripts and
// executables by name (the execute bit is checked by nobody here: Detect
// does no I/O).
func wanted(p string) bool {
	return scriptExt[strings.ToLower(filepath.Ext(p))] || filepath.Ext(p) == ""
}

func copyEvent(ev *event.Event) *event.Event {
	c := *ev
	if ev.Process != nil {
		p := *ev.Process
		c.Process = &p
	}
	if ev.File != nil {
		f := *ev.File
		c.File = &f
	}
	return &c
}

func (d *Detector) enqueue(j job) bool {
	select {
	case d.jobs <- j:
		return true
	default:
		d.dropped.Inc()
		d.o.Health(yr.ComponentScan, event.HealthDegraded, "YARA scan queue full: scans skipped (raise yara.workers or yara.queue)")
		return false
	}
}

// ScanProcess queues a scan of process pid's memory on behalf of another
// component (why ends up in the alert message). It never blocks and
// reports false when the queue is full.
func (d *Detector) ScanProcess(pid int, proc *event.Process, why string) bool {
	ev := &event.Event{Message: why, Event: event.Meta{Kind: event.KindEvent, Category: []string{"process"}, Type: []string{"info"}}, Process: proc}
	return d.enqueue(job{pid: pid, ev: ev})
}

// ScanPaths sweeps files and folders (the kill-switch "scan" action) within
// the CPU budget of Options.Sweep; matches become alerts. It blocks until
// the sweep ends or ctx is done.
func (d *Detector) ScanPaths(ctx context.Context, paths []string) (yr.SweepStats, error) {
	return d.o.Engine.Sweep(ctx, paths, d.o.Sweep, func(r yr.Result, err error) {
		if err != nil {
			d.o.Log.Debug("yara sweep: file not scanned", logkey.Error, err)
			return
		}
		ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Category: []string{"file"}, Type: []string{"info"}}, File: &event.File{Path: r.Path}}
		d.park(ev, r.Matches, "")
	})
}

// Run implements pipeline.Source: it runs the scan workers and the rule
// watcher until ctx is done.
func (d *Detector) Run(ctx context.Context, emit func(event.Event)) error {
	d.emit.Store(&emit)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = d.o.Engine.Watch(ctx) }()
	for range d.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-d.jobs:
					d.scan(j)
				}
			}
		}()
	}
	// A wake-up can be dropped when the bus is full: repeat it every
	// second while detections wait (an idle detector has no timer).
	var (
		tk   *time.Ticker
		tick <-chan time.Time
	)
	defer func() {
		if tk != nil {
			tk.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-d.parkedSig:
			if tk == nil {
				tk = time.NewTicker(time.Second)
				tick = tk.C
			}
		case <-tick:
			if d.nparked.Load() > 0 {
				d.wake(nil)
				continue
			}
			tk.Stop()
			tk, tick = nil, nil
		}
	}
}

func (d *Detector) scan(j job) {
	if j.pid > 0 {
		ms, err := d.o.Engine.ScanPID(j.pid)
		if err != nil {
			d.o.Log.Warn("yara memory scan failed", logkey.PID, j.pid, logkey.Error, err)
			return
		}
		d.park(j.ev, ms, "")
		return
	}
	res, err := d.o.Engine.ScanFile(j.path)
	if err != nil {
		d.o.Log.Debug("yara scan skipped", logkey.Path, j.path, logkey.Error, err)
		return
	}
	if res.Cached {
		return // this binary was scanned, and reported if it matched, before
	}
	d.park(j.ev, res.Matches, res.SHA256)
}

// park turns matches into detections and wakes the detector.
func (d *Detector) park(src *event.Event, ms []yr.Match, sha string) {
	if len(ms) == 0 {
		return
	}
	var dets []pipeline.Detection
	for _, m := range ms {
		dets = append(dets, detection(src, m, sha))
	}
	d.mu.Lock()
	d.parked = append(d.parked, dets...)
	d.nparked.Store(int64(len(d.parked)))
	d.mu.Unlock()
	select {
	case d.parkedSig <- struct{}{}:
	default: // Run has been told already
	}
	d.wake(src)
}

// wake emits the telemetry event that makes the pipeline call Detect.
func (d *Detector) wake(src *event.Event) {
	emit := d.emit.Load()
	if emit == nil {
		return
	}
	ev := event.Event{
		Timestamp: time.Now(),
		Message:   "YARA match; alert follows",
		Event: event.Meta{Kind: event.KindEvent, ID: event.NewID(), Category: []string{"malware"}, Type: []string{"info"},
			Action: ActionMatch, Dataset: event.DatasetFile, Module: "yara"},
	}
	if src != nil && src.File != nil {
		f := *src.File
		ev.File = &f
	}
	(*emit)(ev)
}

// detection builds the alert for match m of the scan triggered by src.
func detection(src *event.Event, m yr.Match, sha string) pipeline.Detection {
	meta := alert.Meta{
		RuleID: m.Meta.ID, RuleName: m.Rule, Description: m.Meta.Description, Ruleset: event.RulesetYARA,
		Reference: m.Meta.Reference, Severity: m.Meta.Severity, Action: ActionMatch,
	}
	if meta.RuleID == "" {
		meta.RuleID = m.Namespace + ":" + m.Rule
	}
	for _, t := range m.Meta.Techniques {
		meta.Techniques = append(meta.Techniques, alert.Technique{ID: t})
	}
	what := "memory of the process"
	switch {
	case src.File != nil:
		what = src.File.Path
	case src.Process != nil && src.Process.Executable != "" && src.Event.Action == "exec":
		what = src.Process.Executable
	}
	msg := "YARA rule " + m.Rule + " matched " + what
	if src.Message != "" && src.Event.Action == "" {
		msg += " (" + src.Message + ")"
	}
	a := alert.FromEvent(meta, src, msg)
	if m.Meta.Author != "" {
		a.Rule.Author = []string{m.Meta.Author}
	}
	if sha != "" {
		h := &event.Hash{SHA256: sha}
		switch {
		case a.File != nil:
			a.File.Hash = h
		case a.Process != nil:
			a.Process.Hash = h
		}
	}
	det := pipeline.Detection{Alert: a}
	// Only an executed binary is stopped: a written file has no process
	// of its own to stop.
	if src.Event.Action == "exec" && src.Process != nil && (m.Meta.Response == event.ActionKill || m.Meta.Response == event.ActionSuspend) {
		det.Response = m.Meta.Response
		t := &pipeline.Target{PID: int(src.Process.PID)}
		if src.Process.Start != nil {
			t.Start = src.Process.Start.UnixMilli()
		}
		det.Target = t
	}
	return det
}
