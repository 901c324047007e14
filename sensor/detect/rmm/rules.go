package rmm

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Behaviours a rule can describe. Pattern behaviours match the effective
// process name and arguments; the others are decided in code from what the
// detector tracks (see docs/rules.md "RMM behaviour rules").
const (
	BehaviourUnapproved    = "unapproved-start"   // a catalogued tool that is not approved starts
	BehaviourInstalled     = "unapproved-install" // its files appear in an install path
	BehaviourIntegrity     = "agent-modified"     // an approved agent's binary differs from its baseline
	BehaviourDecode        = "decode"             // decodes into a file (pattern, output checked)
	BehaviourDecodedExec   = "decoded-exec"       // runs a file a decoder wrote
	BehaviourSystemCopy    = "system-copy"        // runs a renamed copy of a system binary
	BehaviourWritableExec  = "writable-exec"      // runs something from a world-writable or memory-backed place
	BehaviourChmodExec     = "chmod-exec"         // makes a file executable (pattern), then runs it
	BehaviourSecurityOff   = "security-off"       // stops, disables or kills security tooling (pattern)
	BehaviourBackupDelete  = "backup-delete"      // deletes backups or snapshots (pattern)
	outputStdout           = "stdout"
	outputLastArg          = "last-arg"
	outputInline           = "inline"
	outputFlagPrefix       = "flag:"
	defaultWindowMinutes   = 15
	maxPatternsPerRule     = 64
	maxArgsSampleLen       = 4096
	sampleOutputUnresolved = ""
)

var patternBehaviours = map[string]bool{BehaviourDecode: true, BehaviourChmodExec: true, BehaviourSecurityOff: true, BehaviourBackupDelete: true}

var codeBehaviours = map[string]bool{
	BehaviourUnapproved: true, BehaviourInstalled: true, BehaviourIntegrity: true, BehaviourDecodedExec: true,
	BehaviourSystemCopy: true, BehaviourWritableExec: true,
}

// Rules is rules/rmm/detections.yaml.
type Rules struct {
	// Guards are the false-positive guards shared by every behaviour rule.
	Guards Guards `yaml:"guards"`
	Rules  []Rule `yaml:"rules"`
}

// Guards say what administration looks like.
type Guards struct {
	// PackageManagers: descendants of these are upgrades, not attacks; the
	// behaviour rules skip them, and running one opens the agent's update
	// window.
	PackageManagers []string `yaml:"package_managers"`
	// UpdateArgs: the agent (or a binary in its install path) run with
	// arguments matching this regex is the agent updating itself, which
	// opens the update window too.
	UpdateArgs string `yaml:"update_args"`
	// UpdateWindowMinutes: how long after an update a changed agent binary
	// is accepted as the new baseline instead of raising an alert.
	UpdateWindowMinutes int `yaml:"update_window_minutes"`
	// DataExtensions: a decoder writing to a file with one of these
	// extensions handles data (a config, a report), not a payload.
	DataExtensions []string `yaml:"data_extensions"`
	// SuspiciousInputs: when a decoder has exited before its output could
	// be read, decoding a file with one of these extensions still counts
	// (Kaseya's payload came as agent.crt); other inputs (.b64, .txt) do not.
	SuspiciousInputs []string `yaml:"suspicious_inputs"`
	// SystemDirs: where the system binaries live whose renamed copies are
	// recognised (and whose own runs are never "renamed").
	SystemDirs []string `yaml:"system_dirs"`
	// SystemBinaries: names of system binaries attackers copy and rename
	// (the Kaseya chain renamed certutil).
	SystemBinaries []string `yaml:"system_binaries"`

	updateArgs *regexp.Regexp
}

// Rule is one behaviour rule.
type Rule struct {
	ID          string            `yaml:"id"`
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Behaviour   string            `yaml:"behaviour"`
	Ruleset     string            `yaml:"ruleset"` // rmm (default) or integrity
	Severity    int               `yaml:"severity"`
	Response    string            `yaml:"response"` // none | kill
	Technique   []alert.Technique `yaml:"technique"`
	Tactic      alert.Technique   `yaml:"tactic"`
	Patterns    []Pattern         `yaml:"patterns"`
	Tests       *Tests            `yaml:"tests"`
}

// Pattern matches one program's invocation.
type Pattern struct {
	// Names are effective process names (a renamed copy of a system binary
	// counts as the original), compared case-insensitively, ".exe" ignored.
	Names []string `yaml:"names"`
	// Args is a regex over the arguments after argv[0], joined by spaces.
	// Empty matches any arguments.
	Args string `yaml:"args"`
	// Output, for decode rules: where the decoded bytes go — stdout (the
	// file the process's standard output is), last-arg, flag:<flag> (the
	// argument after <flag>), or inline (the command writes the file itself).
	Output string `yaml:"output"`

	args *regexp.Regexp
}

// Tests are command lines (argv joined by spaces) a pattern rule must and
// must not match.
type Tests struct {
	Positive []string `yaml:"positive"`
	Negative []string `yaml:"negative"`
}

// Validate reports every problem of the rule at once.
func (r *Rule) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if r.ID == "" {
		bad("id is required")
	}
	if r.Name == "" {
		bad("name is required")
	}
	switch {
	case patternBehaviours[r.Behaviour]:
		if len(r.Patterns) == 0 {
			bad("behaviour %s needs patterns", r.Behaviour)
		}
	case codeBehaviours[r.Behaviour]:
		if len(r.Patterns) > 0 {
			bad("behaviour %s takes no patterns", r.Behaviour)
		}
	default:
		bad("behaviour %q is not one of decode, decoded-exec, system-copy, writable-exec, chmod-exec, security-off, backup-delete, unapproved-start, unapproved-install, agent-modified", r.Behaviour)
	}
	switch r.Ruleset {
	case "":
		r.Ruleset = event.RulesetRMM
	case event.RulesetRMM, event.RulesetIntegrity:
	default:
		bad("ruleset %q: want rmm or integrity", r.Ruleset)
	}
	if r.Severity < 1 || r.Severity > 100 {
		bad("severity %d: want 1-100", r.Severity)
	}
	switch r.Response {
	case "", event.ActionNone, event.ActionKill:
	default:
		bad("response %q: want none or kill", r.Response)
	}
	if len(r.Technique) == 0 {
		bad("technique: at least one ATT&CK technique is required")
	}
	if len(r.Patterns) > maxPatternsPerRule {
		bad("more than %d patterns", maxPatternsPerRule)
	}
	for i := range r.Patterns {
		p := &r.Patterns[i]
		if len(p.Names) == 0 {
			bad("pattern %d: names are required", i+1)
		}
		for j, n := range p.Names {
			p.Names[j] = normName(n)
		}
		re, err := regexp.Compile(p.Args)
		if err != nil {
			bad("pattern %d: args: %v", i+1, err)
		}
		p.args = re
		if r.Behaviour == BehaviourDecode {
			switch {
			case p.Output == outputStdout, p.Output == outputLastArg, p.Output == outputInline,
				strings.HasPrefix(p.Output, outputFlagPrefix) && len(p.Output) > len(outputFlagPrefix):
			default:
				bad("pattern %d: output %q: want stdout, last-arg, inline or flag:<flag>", i+1, p.Output)
			}
		} else if p.Output != "" {
			bad("pattern %d: output only applies to decode rules", i+1)
		}
	}
	if r.Tests != nil && len(errs) == 0 {
		if !patternBehaviours[r.Behaviour] {
			bad("tests apply to pattern rules only")
		}
		for _, s := range r.Tests.Positive {
			if r.matchSample(s) == nil {
				bad("test: positive sample %q does not match", s)
			}
		}
		for _, s := range r.Tests.Negative {
			if r.matchSample(s) != nil {
				bad("test: negative sample %q matches", s)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		if r.ID != "" {
			return fmt.Errorf("rule %s: %w", r.ID, err)
		}
		return err
	}
	return nil
}

// matchSample matches a command line sample "name arg arg".
func (r *Rule) matchSample(s string) *Pattern {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil
	}
	return r.match(normName(path.Base(f[0])), strings.Join(f[1:], " "))
}

// match returns the first pattern matching the effective name and the
// joined arguments.
func (r *Rule) match(name, args string) *Pattern {
	for i := range r.Patterns {
		p := &r.Patterns[i]
		for _, n := range p.Names {
			if n == name && p.args.MatchString(args) {
				return p
			}
		}
	}
	return nil
}

// normName lowercases a program name and drops a Windows ".exe".
func normName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".exe")
}

// Validate checks the guards.
func (g *Guards) Validate() error {
	var errs []error
	re, err := regexp.Compile(g.UpdateArgs)
	if err != nil {
		errs = append(errs, fmt.Errorf("guards.update_args: %w", err))
	}
	if g.UpdateArgs == "" {
		errs = append(errs, errors.New("guards.update_args is required"))
	}
	g.updateArgs = re
	if g.UpdateWindowMinutes == 0 {
		g.UpdateWindowMinutes = defaultWindowMinutes
	}
	if g.UpdateWindowMinutes < 1 || g.UpdateWindowMinutes > 24*60 {
		errs = append(errs, fmt.Errorf("guards.update_window_minutes %d: want 1-1440", g.UpdateWindowMinutes))
	}
	for _, d := range g.SystemDirs {
		win := len(d) > 3 && d[1] == ':' && d[2] == '\\' && strings.HasSuffix(d, `\`)
		if !win && (!path.IsAbs(d) || !strings.HasSuffix(d, "/")) {
			errs = append(errs, fmt.Errorf("guards.system_dirs: %q must be absolute and end in /", d))
		}
	}
	for _, e := range append(append([]string{}, g.DataExtensions...), g.SuspiciousInputs...) {
		if !strings.HasPrefix(e, ".") {
			errs = append(errs, fmt.Errorf("guards.data_extensions: %q must start with a dot", e))
		}
	}
	for i, n := range g.PackageManagers {
		g.PackageManagers[i] = normName(n)
	}
	return errors.Join(errs...)
}

// LoadRules reads dir/detections*.yaml of fsys strictly and validates it.
// With several files, the first file's guards count and the others may only
// add rules; ids must be unique.
func LoadRules(fsys fs.FS, dir string) (*Rules, error) { return load(fsys, dir, true) }

// LoadExtraRules reads the behaviour rules of an extra rule folder: rules
// only (guards there are an error), and none of them required.
func LoadExtraRules(fsys fs.FS, dir string) (*Rules, error) { return load(fsys, dir, false) }

func load(fsys fs.FS, dir string, full bool) (*Rules, error) {
	files, err := cfgfile.DecodeGlob[Rules](fsys, path.Join(dir, "detections*.yaml"))
	out := &Rules{}
	errs := []error{err}
	seen := map[string]string{}
	for i, f := range files {
		name, rf := f.Name, f.Value
		if !full && (len(rf.Guards.PackageManagers) > 0 || rf.Guards.UpdateArgs != "" || len(rf.Guards.SystemDirs) > 0) {
			errs = append(errs, fmt.Errorf("%s: guards belong to the built-in rules only", name))
		}
		if full && i == 0 {
			if err := rf.Guards.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			out.Guards = rf.Guards
		}
		for _, r := range rf.Rules {
			if err := r.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			if prev, dup := seen[r.ID]; dup {
				errs = append(errs, fmt.Errorf("%s: rule %s already defined in %s", name, r.ID, prev))
				continue
			}
			seen[r.ID] = name
			out.Rules = append(out.Rules, r)
		}
	}
	if !full {
		return out, errors.Join(errs...)
	}
	if len(files) == 0 {
		errs = append(errs, fmt.Errorf("%s: no detections*.yaml", dir))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, b := range []string{BehaviourUnapproved, BehaviourInstalled, BehaviourIntegrity} {
		if out.byBehaviour(b) == nil {
			errs = append(errs, fmt.Errorf("%s: no rule for behaviour %s (the detector needs one)", dir, b))
		}
	}
	return out, errors.Join(errs...)
}

// Merge adds the rules of o (an extra rule folder); its guards are ignored.
func (rs *Rules) Merge(o *Rules) error {
	seen := map[string]bool{}
	for _, r := range rs.Rules {
		seen[r.ID] = true
	}
	for _, r := range o.Rules {
		if seen[r.ID] {
			return fmt.Errorf("rule %s already defined", r.ID)
		}
		rs.Rules = append(rs.Rules, r)
	}
	return nil
}

func (rs *Rules) byBehaviour(b string) *Rule {
	for i := range rs.Rules {
		if rs.Rules[i].Behaviour == b {
			return &rs.Rules[i]
		}
	}
	return nil
}
