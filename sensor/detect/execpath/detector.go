package execpath

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// StatDir returns the mode of a directory; os.Stat in production, a fixture
// in tests.
type StatDir func(dir string) (fs.FileMode, error)

// Detector implements pipeline.Detector.
type Detector struct {
	rules []Rule
	stat  StatDir
	now   func() time.Time

	// cache remembers directory modes for a short while: an exec storm from
	// one directory must not become a stat storm. Detect runs on one
	// goroutine; the mutex keeps the cache safe for a caller that shares
	// the detector across goroutines.
	mu    sync.Mutex
	cache map[string]dirEntry
}

type dirEntry struct {
	mode fs.FileMode
	err  error
	at   time.Time
}

const (
	cacheTTL = 10 * time.Second
	cacheMax = 4096
)

// New returns a detector for rules. stat may be nil (os.Stat).
func New(rules []Rule, stat StatDir) *Detector {
	if stat == nil {
		stat = func(dir string) (fs.FileMode, error) {
			fi, err := os.Stat(dir)
			if err != nil {
				return 0, err
			}
			return fi.Mode(), nil
		}
	}
	return &Detector{rules: rules, stat: stat, now: time.Now, cache: map[string]dirEntry{}}
}

// Name implements pipeline.Detector.
func (d *Detector) Name() string { return "exec-location" }

// Detect implements pipeline.Detector: one detection per exec at most, from
// the first rule that matches.
func (d *Detector) Detect(ev *event.Event) []pipeline.Detection {
	if ev.Event.Kind != event.KindEvent || ev.Event.Action != "exec" || ev.Process == nil || ev.Process.Executable == "" {
		return nil
	}
	exe := ev.Process.Executable
	for i := range d.rules {
		r := &d.rules[i]
		if r.excluded(exe) {
			continue
		}
		var why string
		switch r.Match {
		case MatchMemory:
			if !r.memoryMatch(exe) {
				continue
			}
			why = "memory-backed location"
		case MatchWorldWritable:
			mode, err := d.dirMode(filepath.Dir(exe))
			if err != nil || mode.Perm()&0o002 == 0 {
				continue
			}
			why = "world-writable directory " + filepath.Dir(exe) + " (" + mode.String() + ")"
		}
		return []pipeline.Detection{d.detection(r, ev, why)}
	}
	return nil
}

func (d *Detector) detection(r *Rule, ev *event.Event, why string) pipeline.Detection {
	m := alert.Meta{
		RuleID: r.ID, RuleName: r.Name, Description: r.Description, Ruleset: event.RulesetSigma,
		Severity: r.Severity, Action: "exec-from-" + r.Match,
		Techniques: slices.Clone(r.Technique), Tactic: alert.TacticOf(r.Tactic),
	}
	a := alert.FromEvent(m, ev, r.Name+": "+ev.Process.Executable+" ("+why+")")
	det := pipeline.Detection{Alert: a, Response: r.Response}
	if det.Response != "" && det.Response != event.ActionNone {
		t := &pipeline.Target{PID: int(ev.Process.PID)}
		if ev.Process.Start != nil {
			t.Start = ev.Process.Start.UnixMilli()
		}
		det.Target = t
	}
	return det
}

func (d *Detector) dirMode(dir string) (fs.FileMode, error) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.cache[dir]; ok && now.Sub(e.at) < cacheTTL {
		return e.mode, e.err
	}
	if len(d.cache) >= cacheMax {
		clear(d.cache) // simple bound; the cache refills from the hot directories
	}
	mode, err := d.stat(dir)
	d.cache[dir] = dirEntry{mode: mode, err: err, at: now}
	return mode, err
}
