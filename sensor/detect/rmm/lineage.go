package rmm

import (
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// hit is a behaviour rule that matched.
type hit struct {
	rule *Rule
	why  string
}

// lineage evaluates the behaviour rules for a descendant of an agent.
func (d *Detector) lineage(ev *event.Event, link *rmmcat.Agent) *pipeline.Detection {
	p := ev.Process
	g := &d.rules.Guards
	// Package upgrades the agent runs are administration: their maintainer
	// scripts copy, chmod and run files. They open the update window.
	self := normName(baseName(p.Executable, p.Name))
	if isIn(g.PackageManagers, self) {
		d.openWindow(link.Product, "package manager "+self+" run by the agent")
		return nil
	}
	for _, a := range link.Chain[:len(link.Chain)-1] {
		if isIn(g.PackageManagers, normName(baseName(a.Executable, a.Name))) {
			return nil
		}
	}
	if d.inInstallPath(link.Product, p.Executable) && d.updateArgs(p.Args) {
		d.openWindow(link.Product, "ran "+p.CommandLine)
		return nil
	}

	eff, renamedFrom := self, ""
	if p.Executable != "" && !d.inSystemDir(p.Executable) {
		if orig := d.sys.lookup(d.o.Host, p.PID, p.Executable); orig != "" {
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
	return d.lineageAlert(ev, link, hits, eff, renamedFrom)
}

// decodeOutput decides whether a decoder writes a payload: into a regular
// file that is not data. A decoder writing into a pipe or terminal is
// handling data. If the process is already gone (decoders are quick), a
// file argument as input counts, as does running a renamed copy.
func (d *Detector) decodeOutput(p *event.Process, pat *Pattern, renamed bool) (string, bool) {
	var out string
	switch {
	case pat.Output == outputStdout:
		target, err := d.o.Host.Stdout(p.PID)
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
		fi, err := d.o.Host.Stat(dir)
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
