// Package rmm is the RMM-agent watch: it flags remote-access tools that are
// not approved (started or installed), approved agents whose binary changed
// outside an update (the supply-chain compromise itself), and what the
// descendants of any RMM agent do that administration does not — decode a
// payload and run it, run renamed system binaries, turn security tooling off,
// delete backups. Rules are data: the catalog (rules/rmm/catalog.yaml, see
// sensor/rmm) and the behaviour rules (rules/rmm/detections.yaml).
//
// Every alert about a descendant carries the agent (tillwatch.rmm.*), the
// chain up to it (process.parent, tillwatch.process.ancestry) and a
// fingerprint of (agent, normalised command line) that the collector counts
// across hosts to see a fleet-wide push.
//
// Files by concern: detector.go takes events in and keeps the short-lived
// state; lineage.go evaluates the behaviour rules for an agent's
// descendants; integrity.go checks approved agents' binaries; args.go reads
// command lines; fingerprint.go; ecs.go builds the alerts; host.go is the
// one seam to the OS (/proc and file digests), so the rules run on fakes in
// tests. The agent above a process is found by sensor/rmm (FindAgent) on
// the chain the process table gives.
package rmm

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// File actions that mean "a file now has new content at file.path".
var fileActions = map[string]bool{"create": true, "close-write": true, "rename": true, rmmcat.ActionScanFound: true}

// Options configure a Detector.
type Options struct {
	Catalog *rmmcat.Catalog
	Rules   *Rules
	// Approved names the approved products (ids or aliases); everything
	// else in the catalog is unapproved.
	Approved []string
	// KillAgent extends a kill response to the agent itself and its whole
	// tree; by default only the subtree below the agent is killed, so the
	// vendor can still reach the till.
	KillAgent bool
	// GOOS selects the catalog's recognisers (runtime.GOOS).
	GOOS     string
	Table    Ancestry
	Baseline *rmmcat.Baseline
	// ProcRoot is where /proc is ("/proc"), for the default Host.
	ProcRoot string
	// Host reads what the detector needs from the OS; default
	// NewProcHost(ProcRoot, nil).
	Host Host
	Log  *slog.Logger
	// Health receives degradations (the baseline cannot be written).
	Health event.HealthFunc
	Now    func() time.Time
}

// Detector implements pipeline.Detector. Detect runs on one goroutine, so
// the tracking maps need no locks.
type Detector struct {
	o        Options
	m        *rmmcat.Matcher
	approved map[string]bool
	rules    *Rules
	sys      *sysIndex
	log      *slog.Logger

	alerted  map[string]time.Time // dedupe key -> when
	decoded  map[string]time.Time // files a decoder wrote, by path
	chmodded map[string]time.Time // files made executable, by path
	windows  map[string]time.Time // product id -> update window end
	dirModes map[string]dirMode
}

type dirMode struct {
	mode fs.FileMode
	ok   bool
	at   time.Time
}

const (
	trackTTL   = 10 * time.Minute
	trackMax   = 4096
	dedupeTTL  = 10 * time.Minute
	dirModeTTL = 10 * time.Second
)

// New returns a detector. Unknown approved names are an error naming them.
func New(o Options) (*Detector, error) {
	if o.Catalog == nil || o.Rules == nil || o.Table == nil {
		return nil, errors.New("rmm detector: catalog, rules and process table are required")
	}
	approved, err := o.Catalog.Resolve(o.Approved)
	if err != nil {
		return nil, fmt.Errorf("rmm.approved: %w", err)
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Host == nil {
		o.Host = NewProcHost(o.ProcRoot, nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = event.NoHealth
	}
	d := &Detector{
		o: o, m: rmmcat.NewMatcher(o.Catalog, o.GOOS), approved: approved, rules: o.Rules,
		log:     o.Log.With(logkey.Component, "detect-rmm"),
		alerted: map[string]time.Time{}, decoded: map[string]time.Time{}, chmodded: map[string]time.Time{},
		windows: map[string]time.Time{}, dirModes: map[string]dirMode{},
	}
	d.sys = newSysIndex(o.Rules.Guards.SystemDirs, o.Rules.Guards.SystemBinaries)
	return d, nil
}

// Name implements pipeline.Detector.
func (d *Detector) Name() string { return "rmm" }

// Detect implements pipeline.Detector.
func (d *Detector) Detect(ev *event.Event) []pipeline.Detection {
	switch {
	case ev.Event.Kind != event.KindEvent:
		return nil
	case ev.Event.Action == "exec" && ev.Process != nil && ev.Process.PID > 0:
		return d.onExec(ev)
	case ev.Event.Dataset == event.DatasetFile && fileActions[ev.Event.Action] && ev.File != nil && ev.File.Path != "":
		return d.onFile(ev)
	}
	return nil
}

func (d *Detector) onExec(ev *event.Event) []pipeline.Detection {
	p := ev.Process
	var out []pipeline.Detection
	if prod, _ := d.m.Process(p.Name, p.Executable); prod != nil {
		if !d.approved[prod.ID] {
			if d.once("start:" + prod.ID + ":" + p.Executable + ":" + strconv.FormatInt(p.PID, 10)) {
				out = append(out, d.simple(BehaviourUnapproved, ev, prod, fmt.Sprintf("%s (%s) started: %s is not in rmm.approved", prod.Name, p.Executable, prod.ID)))
			}
		} else if p.Executable != "" {
			if d.updateArgs(p.Args) {
				d.openWindow(prod, "ran "+p.CommandLine)
			}
			if det := d.integrity(ev, prod, p.Executable, p.PID); det != nil {
				out = append(out, *det)
			}
		}
	}
	link := d.m.FindAgent(d.o.Table.Ancestry(int(p.PID), proctree.MaxDepth))
	if link == nil {
		return out
	}
	if det := d.lineage(ev, link); det != nil {
		out = append(out, *det)
	}
	return out
}

func (d *Detector) onFile(ev *event.Event) []pipeline.Detection {
	fp := ev.File.Path
	prod := d.m.Path(fp)
	if prod == nil {
		for _, u := range rmmcat.UnitDirs {
			if strings.HasPrefix(fp, u) && strings.HasSuffix(fp, ".service") && !strings.Contains(fp[len(u):], "/") {
				prod = d.m.Service(path.Base(fp))
			}
		}
	}
	if prod == nil {
		return nil
	}
	if !d.approved[prod.ID] {
		if !d.once("install:" + fp) {
			return nil
		}
		return []pipeline.Detection{d.simple(BehaviourInstalled, ev, prod, fmt.Sprintf("%s installed: %s (%s is not in rmm.approved)", prod.Name, fp, prod.ID))}
	}
	fi, err := d.o.Host.Stat(fp)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil
	}
	if det := d.integrity(ev, prod, fp, 0); det != nil {
		return []pipeline.Detection{*det}
	}
	return nil
}

func (d *Detector) once(key string) bool {
	now := d.o.Now()
	if at, ok := d.alerted[key]; ok && now.Sub(at) < dedupeTTL {
		return false
	}
	if len(d.alerted) > trackMax {
		clear(d.alerted)
	}
	d.alerted[key] = now
	return true
}

func (d *Detector) track(m map[string]time.Time, p string, now time.Time) {
	if p == "" {
		return
	}
	if len(m) >= trackMax {
		clear(m) // bound; an attack is seconds, not thousands of files
	}
	m[p] = now
}

func (d *Detector) expire(now time.Time) {
	for _, m := range []map[string]time.Time{d.decoded, d.chmodded} {
		for k, at := range m {
			if now.Sub(at) > trackTTL {
				delete(m, k)
			}
		}
	}
}
