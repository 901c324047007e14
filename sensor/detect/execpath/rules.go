// Package execpath is the exec-location detector: it flags programs executed
// from where payloads are dropped — memory-backed locations and
// world-writable directories. Its rules are data (rules/exec/*.yaml).
package execpath

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Match kinds.
const (
	MatchMemory        = "memory"
	MatchWorldWritable = "world-writable"
)

// Rule is one entry of an exec-location rule file.
type Rule struct {
	ID          string            `yaml:"id"`
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Match       string            `yaml:"match"`
	Paths       []string          `yaml:"paths"`
	Exclude     []string          `yaml:"exclude"`
	Severity    int               `yaml:"severity"`
	Response    string            `yaml:"response"`
	Technique   []alert.Technique `yaml:"technique"`
	Tactic      alert.Technique   `yaml:"tactic"`
	Tests       *RuleTests        `yaml:"tests"`
}

// RuleTests are executable paths a memory rule must and must not match.
type RuleTests struct {
	Positive []string `yaml:"positive"`
	Negative []string `yaml:"negative"`
}

type ruleFile struct {
	Rules []Rule `yaml:"rules"`
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
	if r.Match != MatchMemory && r.Match != MatchWorldWritable {
		bad("match %q: want %s or %s", r.Match, MatchMemory, MatchWorldWritable)
	}
	if r.Match == MatchMemory && len(r.Paths) == 0 {
		bad("match memory needs paths")
	}
	for _, p := range append(slices.Clone(r.Paths), r.Exclude...) {
		if !path.IsAbs(p) {
			bad("path %q is not absolute", p)
		}
	}
	if r.Severity < 1 || r.Severity > 100 {
		bad("severity %d: want 1-100", r.Severity)
	}
	switch r.Response {
	case "", event.ActionNone, event.ActionKill, event.ActionSuspend:
	default:
		bad("response %q: want none, kill or suspend", r.Response)
	}
	if len(r.Technique) == 0 {
		bad("technique: at least one ATT&CK technique is required")
	}
	if r.Tests != nil && r.Match == MatchMemory {
		for _, p := range r.Tests.Positive {
			if !r.memoryMatch(p) {
				bad("test: positive sample %q does not match", p)
			}
		}
		for _, p := range r.Tests.Negative {
			if r.memoryMatch(p) {
				bad("test: negative sample %q matches", p)
			}
		}
	}
	if r.ID != "" {
		return prefix(r.ID, errors.Join(errs...))
	}
	return errors.Join(errs...)
}

func prefix(id string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("rule %s: %w", id, err)
}

// memoryMatch reports whether exe is memory-backed under this rule.
func (r *Rule) memoryMatch(exe string) bool {
	if strings.HasPrefix(exe, "/memfd:") {
		return true
	}
	for _, p := range r.Paths {
		if strings.HasPrefix(exe, p) {
			return true
		}
	}
	return false
}

func (r *Rule) excluded(exe string) bool {
	for _, p := range r.Exclude {
		if strings.HasPrefix(exe, p) {
			return true
		}
	}
	return false
}

// LoadRules reads every *.yaml file under dir of fsys, strictly, and
// validates each rule. Ids must be unique across files.
func LoadRules(fsys fs.FS, dir string) ([]Rule, error) {
	files, err := cfgfile.DecodeGlob[ruleFile](fsys, path.Join(dir, "*.yaml"))
	var out []Rule
	errs := []error{err}
	seen := map[string]string{}
	for _, f := range files {
		name := f.Name
		for _, r := range f.Value.Rules {
			if err := r.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			if prev, dup := seen[r.ID]; dup {
				errs = append(errs, fmt.Errorf("%s: rule %s already defined in %s", name, r.ID, prev))
				continue
			}
			seen[r.ID] = name
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}
