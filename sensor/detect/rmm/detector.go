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
package rmm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// Ancestry is the slice of the process table the detector needs: the
// ancestors of pid, nearest first, including exited ones
// (proctree.Table implements it).
type Ancestry interface {
	Ancestry(pid int, max int) []proctree.Proc
}

// MaxAncestry bounds how far up the detector looks for an agent.
const MaxAncestry = 32

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
	// ProcRoot is where /proc is ("/proc"); the running image of a process
	// is read from <ProcRoot>/<pid>/exe and its stdout from .../fd/1.
	ProcRoot string
	Log      *slog.Logger
	// Health receives degradations (the baseline cannot be written).
	Health func(component, state, reason string)
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
	hashes   map[hashKey]string
	dirModes map[string]dirMode
}

type hashKey struct {
	path  string
	size  int64
	mtime time.Time
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
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = func(string, string, string) {}
	}
	d := &Detector{
		o: o, m: rmmcat.NewMatcher(o.Catalog, o.GOOS), approved: approved, rules: o.Rules,
		log:     o.Log.With(logkey.Component, "detect-rmm"),
		alerted: map[string]time.Time{}, decoded: map[string]time.Time{}, chmodded: map[string]time.Time{},
		windows: map[string]time.Time{}, hashes: map[hashKey]string{}, dirModes: map[string]dirMode{},
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

// agentLink is the nearest catalogued ancestor of a process.
type agentLink struct {
	prod  *rmmcat.Product
	agent proctree.Proc
	chain []proctree.Proc // the process's ancestors up to and including the agent
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
			if det := d.integrity(ev, prod, p.Executable, d.procExe(p.PID)); det != nil {
				out = append(out, *det)
			}
		}
	}
	chain := d.o.Table.Ancestry(int(p.PID), MaxAncestry)
	link := d.findAgent(chain)
	if link == nil {
		return out
	}
	if det := d.lineage(ev, link); det != nil {
		out = append(out, *det)
	}
	return out
}

func (d *Detector) findAgent(chain []proctree.Proc) *agentLink {
	for i, a := range chain {
		if prod, _ := d.m.Process(a.Name, a.Executable); prod != nil {
			return &agentLink{prod: prod, agent: a, chain: chain[:i+1]}
		}
	}
	return nil
}

// hit is a behaviour rule that matched.
type hit struct {
	rule *Rule
	why  string
}

// lineage evaluates the behaviour rules for a descendant of an agent.
func (d *Detector) lineage(ev *event.Event, link *agentLink) *pipeline.Detection {
	p := ev.Process
	g := &d.rules.Guards
	// Package upgrades the agent runs are administration: their maintainer
	// scripts copy, chmod and run files. They open the update window.
	self := normName(baseName(p.Executable, p.Name))
	if isIn(g.PackageManagers, self) {
		d.openWindow(link.prod, "package manager "+self+" run by the agent")
		return nil
	}
	for _, a := range link.chain[:len(link.chain)-1] {
		if isIn(g.PackageManagers, normName(baseName(a.Executable, a.Name))) {
			return nil
		}
	}
	if d.inInstallPath(link.prod, p.Executable) && d.updateArgs(p.Args) {
		d.openWindow(link.prod, "ran "+p.CommandLine)
		return nil
	}

	eff, renamedFrom := self, ""
	if p.Executable != "" && !d.inSystemDir(p.Executable) {
		if orig := d.sys.lookup(d.procExe(p.PID), p.Executable); orig != "" {
			renamedFrom = orig
			eff = normName(path.Base(orig))
		}
	}
	args := strings.Join(argsAfter0(p), " ")
	now := d.o.Now()
	d.expire(now)

	runs := ran(p)
	var hits []hit
	for i := range d.rules.Rules {
		r := &d.rules.Rules[i]
		switch r.Behaviour {
		case BehaviourDecode:
			pat := r.match(eff, args)
			if pat == nil {
				continue
			}
			if why, ok := d.decodeOutput(p, pat, renamedFrom != ""); ok {
				hits = append(hits, hit{r, why})
			}
		case BehaviourDecodedExec:
			for _, c := range runs {
				if at, ok := d.decoded[c]; ok {
					hits = append(hits, hit{r, "runs " + c + ", decoded " + now.Sub(at).Round(time.Millisecond).String() + " ago"})
					break
				}
			}
		case BehaviourSystemCopy:
			if renamedFrom != "" {
				hits = append(hits, hit{r, "runs " + p.Executable + ", a copy of " + renamedFrom})
			}
		case BehaviourWritableExec:
			if why := d.writable(p.Executable); why != "" {
				hits = append(hits, hit{r, why})
			}
		case BehaviourChmodExec:
			if r.match(eff, args) != nil {
				for _, f := range fileArgs(p) {
					d.track(d.chmodded, resolve(p.WorkingDirectory, f), now)
				}
				continue
			}
			for _, c := range runs {
				if _, ok := d.chmodded[c]; ok {
					hits = append(hits, hit{r, "runs " + c + ", made executable by the chain"})
					break
				}
			}
		case BehaviourSecurityOff, BehaviourBackupDelete:
			if r.match(eff, args) != nil {
				hits = append(hits, hit{r, eff + " " + args})
			}
		}
	}
	if len(hits) == 0 {
		return nil
	}
	// The first rule in file order is the strongest statement; the others
	// are named in the message so nothing seen is lost.
	h := hits[0]
	msg := fmt.Sprintf("%s: %s (below %s agent %s pid %d)", h.rule.Name, h.why, link.prod.Name, link.agent.Executable, link.agent.PID)
	for _, o := range hits[1:] {
		msg += "; also " + o.rule.ID + ": " + o.why
	}
	det := d.detection(h.rule, ev, msg)
	tw := ensureTW(&det.Alert)
	tw.RMM = &event.RMM{
		Product: link.prod.ID, ProductName: link.prod.Name, Approved: d.approved[link.prod.ID],
		AgentPID: int64(link.agent.PID), AgentExe: link.agent.Executable, Behaviour: h.rule.Behaviour,
		Fingerprint: Fingerprint(link.prod.ID, eff, argsAfter0(p)),
	}
	if renamedFrom != "" {
		tw.RMM.EffectiveName = renamedFrom
	}
	tw.Process = &event.ProcessContext{Ancestry: toAncestry(link.chain)}
	if det.Alert.Process.Parent == nil || det.Alert.Process.Parent.Name == "" {
		det.Alert.Process.Parent = toParent(link.chain[0])
	}
	if det.Response == event.ActionKill {
		// Kill the subtree the agent started (the cmd.exe of the Kaseya
		// chain), so the steps still to come die with it; the agent itself
		// only when configured.
		root := proctree.Proc{PID: int(p.PID)}
		if p.Start != nil {
			root.Start = *p.Start
		}
		if len(link.chain) >= 2 {
			root = link.chain[len(link.chain)-2]
		}
		if d.o.KillAgent {
			root = link.agent
		}
		det.Target = &pipeline.Target{PID: root.PID, Tree: true}
		if !root.Start.IsZero() {
			det.Target.Start = root.Start.UnixMilli()
		}
	}
	return &det
}

// decodeOutput decides whether a decoder writes a payload: into a regular
// file that is not data. A decoder writing into a pipe or terminal is
// handling data. If the process is already gone (decoders are quick), a
// file argument as input counts, as does running a renamed copy.
func (d *Detector) decodeOutput(p *event.Process, pat *Pattern, renamed bool) (string, bool) {
	var out string
	switch {
	case pat.Output == outputStdout:
		target, err := os.Readlink(filepath.Join(d.o.ProcRoot, strconv.FormatInt(p.PID, 10), "fd", "1"))
		switch {
		case err == nil && strings.HasPrefix(target, "/") && !strings.HasPrefix(target, "/dev/"):
			out = target
		case err == nil:
			if renamed {
				return "renamed decoder writing to " + target, true
			}
			return "", false // pipe, socket, terminal: data handling
		default:
			if renamed {
				return "renamed decoder; it exited before its output could be read", true
			}
			for _, in := range fileArgs(p) {
				if isIn(d.rules.Guards.SuspiciousInputs, strings.ToLower(filepath.Ext(in))) {
					return "decodes " + in + " (exited before its output could be read)", true
				}
			}
			return "", false
		}
	case pat.Output == outputLastArg:
		if fa := fileArgs(p); len(fa) >= 2 {
			out = resolve(p.WorkingDirectory, fa[len(fa)-1])
		}
	case strings.HasPrefix(pat.Output, outputFlagPrefix):
		flag := strings.TrimPrefix(pat.Output, outputFlagPrefix)
		a := argsAfter0(p)
		for i := 0; i+1 < len(a); i++ {
			if a[i] == flag {
				out = resolve(p.WorkingDirectory, a[i+1])
			}
		}
		if out == "" {
			return "", false // to stdout; not a file
		}
	case pat.Output == outputInline:
		return "decodes and writes a file in one command", true
	}
	if out == "" {
		return "", false
	}
	if isIn(d.rules.Guards.DataExtensions, strings.ToLower(filepath.Ext(out))) {
		return "", false
	}
	d.track(d.decoded, out, d.o.Now())
	return "decodes into " + out, true
}

// integrity checks an approved agent's binary against the baseline. running
// is the image that runs (/proc/<pid>/exe), "" for a file on disk.
func (d *Detector) integrity(ev *event.Event, prod *rmmcat.Product, file, running string) *pipeline.Detection {
	if d.o.Baseline == nil {
		return nil
	}
	src := file
	if running != "" {
		src = running
	}
	sum, size, err := d.hash(src)
	if err != nil && src != file {
		sum, size, err = d.hash(file)
	}
	if err != nil {
		return nil // unreadable: enrichment says so; nothing to compare
	}
	verdict, prev, err := d.o.Baseline.Check(prod.ID, file, sum, size)
	if err != nil {
		d.o.Health("rmm-baseline", event.HealthDegraded, err.Error())
		d.log.Error("rmm baseline not saved; fix the state dir", logkey.Error, err)
	}
	if verdict != rmmcat.VerdictChanged {
		return nil
	}
	if end, ok := d.windows[prod.ID]; ok && d.o.Now().Before(end) {
		if err := d.o.Baseline.Accept(prod.ID, file, sum, size, "update window"); err != nil {
			d.o.Health("rmm-baseline", event.HealthDegraded, err.Error())
		}
		d.log.Info("approved agent binary changed during its update window; new baseline recorded", logkey.Path, file, "product", prod.ID, "sha256", sum)
		return nil
	}
	if !d.once("integrity:" + file + ":" + sum) {
		return nil
	}
	det := d.simple(BehaviourIntegrity, ev, prod, fmt.Sprintf("%s binary %s changed outside an update: sha256 %s, baseline %s (recorded %s, %s)",
		prod.Name, file, sum, prev.SHA256, prev.Recorded.Format(time.RFC3339), prev.Reason))
	f := &event.File{Path: file, Name: filepath.Base(file), Directory: filepath.Dir(file), Size: size, Hash: &event.Hash{SHA256: sum}}
	det.Alert.File = f
	return &det
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
	fi, err := os.Stat(fp)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil
	}
	if det := d.integrity(ev, prod, fp, ""); det != nil {
		return []pipeline.Detection{*det}
	}
	return nil
}

// simple builds an alert of the rule for behaviour b about product prod.
func (d *Detector) simple(b string, ev *event.Event, prod *rmmcat.Product, msg string) pipeline.Detection {
	r := d.rules.byBehaviour(b)
	det := d.detection(r, ev, r.Name+": "+msg)
	tw := ensureTW(&det.Alert)
	tw.RMM = &event.RMM{Product: prod.ID, ProductName: prod.Name, Approved: d.approved[prod.ID], Behaviour: b}
	return det
}

func (d *Detector) detection(r *Rule, ev *event.Event, msg string) pipeline.Detection {
	m := alert.Meta{
		RuleID: r.ID, RuleName: r.Name, Description: r.Description, Ruleset: r.Ruleset,
		Severity: r.Severity, Action: "rmm-" + r.Behaviour,
	}
	for _, t := range r.Technique {
		m.Techniques = append(m.Techniques, alert.Technique{ID: t.ID, Name: t.Name})
	}
	if r.Tactic.ID != "" {
		m.Tactic = &alert.Technique{ID: r.Tactic.ID, Name: r.Tactic.Name}
	}
	a := alert.FromEvent(m, ev, msg)
	det := pipeline.Detection{Alert: a, Response: r.Response}
	if det.Response == "" {
		det.Response = event.ActionNone
	}
	return det
}

// openWindow lets the product's binary change for a while: the agent or a
// package manager it runs is updating it.
func (d *Detector) openWindow(prod *rmmcat.Product, why string) {
	end := d.o.Now().Add(time.Duration(d.rules.Guards.UpdateWindowMinutes) * time.Minute)
	if old, ok := d.windows[prod.ID]; !ok || end.After(old) {
		d.windows[prod.ID] = end
		d.log.Info("rmm update window opened", "product", prod.ID, logkey.Reason, why, "until", end)
	}
}

func (d *Detector) updateArgs(args []string) bool {
	if len(args) < 2 {
		return false
	}
	return d.rules.Guards.updateArgs.MatchString(strings.Join(args[1:], " "))
}

func (d *Detector) inInstallPath(prod *rmmcat.Product, exe string) bool {
	return exe != "" && d.m.Path(exe) == prod
}

func (d *Detector) inSystemDir(exe string) bool {
	for _, s := range d.rules.Guards.SystemDirs {
		if strings.HasPrefix(exe, s) {
			return true
		}
	}
	return false
}

// writable says why exe's directory is a payload location, or "".
func (d *Detector) writable(exe string) string {
	if exe == "" {
		return ""
	}
	for _, m := range []string{"/dev/shm/", "/run/shm/"} {
		if strings.HasPrefix(exe, m) {
			return "runs " + exe + " from memory-backed " + m
		}
	}
	if strings.HasPrefix(exe, "/memfd:") {
		return "runs an anonymous in-memory file"
	}
	dir := filepath.Dir(exe)
	now := d.o.Now()
	dm, ok := d.dirModes[dir]
	if !ok || now.Sub(dm.at) > dirModeTTL {
		fi, err := os.Stat(dir)
		dm = dirMode{at: now, ok: err == nil}
		if err == nil {
			dm.mode = fi.Mode()
		}
		if len(d.dirModes) > trackMax {
			clear(d.dirModes)
		}
		d.dirModes[dir] = dm
	}
	if dm.ok && dm.mode.Perm()&0o002 != 0 {
		return "runs " + exe + " from world-writable " + dir + " (" + dm.mode.String() + ")"
	}
	return ""
}

func (d *Detector) procExe(pid int64) string {
	return filepath.Join(d.o.ProcRoot, strconv.FormatInt(pid, 10), "exe")
}

// hash returns the sha256 of a file, cached by path, size and mtime so an
// agent exec'd often is hashed once per version.
func (d *Detector) hash(p string) (string, int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0, err
	}
	k := hashKey{p, fi.Size(), fi.ModTime()}
	if strings.HasPrefix(p, d.o.ProcRoot+"/") {
		// /proc/<pid>/exe stats as the target; key by the target instead
		// of a pid that will be reused.
		if t, err := os.Readlink(p); err == nil {
			k.path = t
		}
	}
	if h, ok := d.hashes[k]; ok {
		return h, k.size, nil
	}
	h, n, err := rmmcat.HashFile(p)
	if err != nil {
		return "", 0, err
	}
	if len(d.hashes) > trackMax {
		clear(d.hashes)
	}
	d.hashes[k] = h
	return h, n, nil
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

// Fingerprint is tillwatch.rmm.fingerprint: a stable digest of the agent
// product and the normalised command line, equal on every host that runs
// the same push. Numbers, hex runs and temporary names are normalised
// because they differ per host.
func Fingerprint(product, name string, args []string) string {
	h := sha256.New()
	h.Write([]byte(product))
	h.Write([]byte{0})
	h.Write([]byte(NormaliseCommand(name, args)))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

var (
	reHexRun = regexp.MustCompile(`[0-9a-f]{8,}`)
	reDigits = regexp.MustCompile(`[0-9]+`)
	reTmp    = regexp.MustCompile(`(/tmp|/var/tmp|/dev/shm)/[^/\s]+`)
)

// NormaliseCommand lowercases, replaces per-host tokens and joins name and
// args with single spaces.
func NormaliseCommand(name string, args []string) string {
	s := strings.ToLower(strings.Join(append([]string{name}, args...), " "))
	s = reTmp.ReplaceAllString(s, "$1/*")
	s = reHexRun.ReplaceAllString(s, "#")
	s = reDigits.ReplaceAllString(s, "0")
	return strings.Join(strings.Fields(s), " ")
}

func ensureTW(a *event.Event) *event.Tillwatch {
	if a.Tillwatch == nil {
		a.Tillwatch = &event.Tillwatch{}
	}
	return a.Tillwatch
}

func toAncestry(chain []proctree.Proc) []event.Ancestor {
	out := make([]event.Ancestor, 0, len(chain))
	for _, p := range chain {
		a := event.Ancestor{PID: int64(p.PID), Name: p.Name, Executable: p.Executable, CommandLine: p.CommandLine, Exited: p.Exited}
		if !p.Start.IsZero() {
			st := p.Start
			a.Start = &st
		}
		out = append(out, a)
	}
	return out
}

func toParent(p proctree.Proc) *event.ParentProcess {
	pp := &event.ParentProcess{PID: int64(p.PID), Name: p.Name, Executable: p.Executable, CommandLine: p.CommandLine, Args: p.Args}
	if !p.Start.IsZero() {
		st := p.Start
		pp.Start = &st
	}
	return pp
}

func argsAfter0(p *event.Process) []string {
	if len(p.Args) > 1 {
		return p.Args[1:]
	}
	if len(p.Args) == 0 && p.CommandLine != "" {
		f := strings.Fields(p.CommandLine)
		if len(f) > 1 {
			return f[1:]
		}
	}
	return nil
}

// fileArgs are the arguments that are not options.
func fileArgs(p *event.Process) []string {
	var out []string
	for _, a := range argsAfter0(p) {
		if a != "" && !strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "+") && !isMode(a) {
			out = append(out, a)
		}
	}
	return out
}

func isMode(a string) bool {
	if len(a) < 3 || len(a) > 4 {
		return strings.ContainsAny(a, "+=") && !strings.Contains(a, "/")
	}
	for _, c := range a {
		if c < '0' || c > '7' {
			return false
		}
	}
	return true
}

func resolve(cwd, p string) string {
	if filepath.IsAbs(p) || cwd == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(cwd, p)
}

var interpreters = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "busybox": true,
	"python": true, "python2": true, "python3": true, "perl": true, "ruby": true}

// ran returns what an exec ran: the executable and, for a script (the
// kernel runs the interpreter with the script as argv[1]), the script.
func ran(p *event.Process) []string {
	var out []string
	if p.Executable != "" {
		out = append(out, p.Executable)
	}
	if a := argsAfter0(p); len(a) > 0 && !strings.HasPrefix(a[0], "-") && interpreters[normName(baseName(p.Executable, p.Name))] {
		out = append(out, resolve(p.WorkingDirectory, a[0]))
	}
	return out
}

func baseName(exe, name string) string {
	if exe != "" {
		return filepath.Base(exe)
	}
	return name
}

func isIn(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
