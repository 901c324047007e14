// Package sigma evaluates Sigma rules (rules/sigma/*.yml) on the sensor's own
// process and file events. Parsing and matching are
// github.com/bradleyjkemp/sigma-go's; this package maps tillwatch's ECS
// events to Sigma field names (Fields), refuses everything the engine or the
// mapping cannot honour (unknown fields, unsupported modifiers, keywords,
// aggregations), and turns matches into alerts.
package sigma

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	sigmago "github.com/bradleyjkemp/sigma-go"
	"github.com/bradleyjkemp/sigma-go/evaluator"
	"gopkg.in/yaml.v3"

	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Rule is one loaded Sigma rule.
type Rule struct {
	File        string // path in the rule tree, for messages
	ID          string
	Title       string
	Description string
	Reference   string   // the first of references
	Authors     []string // author, split at commas
	Level       string
	Severity    int
	Category    string // logsource.category
	Product     string // logsource.product: linux, windows or ""
	Techniques  []string
	Tactic      *alert.Technique

	eval *evaluator.RuleEvaluator
}

// Problem is one thing wrong with a rule file or sample.
type Problem struct {
	File   string
	Line   int // 0 if unknown
	Reason string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Reason)
	}
	return p.File + ": " + p.Reason
}

// Severities maps Sigma levels to event.severity (1-100).
var Severities = map[string]int{"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}

// MaxFileSize bounds a rule file; anything larger is not a rule.
const MaxFileSize = 1 << 20

// topKeys are the attributes of the Sigma rule specification. Anything
// else is most likely a typo (a misspelt "level" would silently become
// the default) and is reported.
var topKeys = map[string]bool{
	"title": true, "id": true, "name": true, "related": true, "taxonomy": true, "status": true,
	"description": true, "license": true, "author": true, "references": true, "date": true,
	"modified": true, "logsource": true, "detection": true, "fields": true, "falsepositives": true,
	"level": true, "tags": true, "scope": true,
}

var (
	techniqueTag = regexp.MustCompile(`^attack\.(t\d{4}(?:\.\d{3})?)$`)
	yamlLine     = regexp.MustCompile(`line (\d+)`)
)

// tactics are the ATT&CK Enterprise tactics by their Sigma tag name.
var tactics = map[string]alert.Technique{
	"reconnaissance": {ID: "TA0043", Name: "Reconnaissance"}, "resource_development": {ID: "TA0042", Name: "Resource Development"},
	"initial_access": {ID: "TA0001", Name: "Initial Access"}, "execution": {ID: "TA0002", Name: "Execution"},
	"persistence": {ID: "TA0003", Name: "Persistence"}, "privilege_escalation": {ID: "TA0004", Name: "Privilege Escalation"},
	"defense_evasion": {ID: "TA0005", Name: "Defense Evasion"}, "credential_access": {ID: "TA0006", Name: "Credential Access"},
	"discovery": {ID: "TA0007", Name: "Discovery"}, "lateral_movement": {ID: "TA0008", Name: "Lateral Movement"},
	"collection": {ID: "TA0009", Name: "Collection"}, "command_and_control": {ID: "TA0011", Name: "Command and Control"},
	"exfiltration": {ID: "TA0010", Name: "Exfiltration"}, "impact": {ID: "TA0040", Name: "Impact"},
}

// ruleFiles lists the rule files directly in dir (samples live below, in
// tests/). A missing dir holds no rules.
func ruleFiles(fsys fs.FS, dir string) ([]string, error) {
	var out []string
	for _, pat := range []string{"*.yml", "*.yaml"} {
		m, err := fs.Glob(fsys, path.Join(dir, pat))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	sort.Strings(out)
	return out, nil
}

// Load parses and checks every rule file in dir of fsys. Any lint problem
// other than missing samples is an error naming file and line: a rule that
// cannot be evaluated as written is refused, never half-run. Ids must be
// unique. A missing dir yields no rules.
func Load(fsys fs.FS, dir string) ([]*Rule, error) {
	rs, ps := parseDir(fsys, dir)
	return rs, problemsErr(ps)
}

// LoadAll loads the built-in rules (dir of builtin) and then dir of every
// extra rule folder (dir absent there is fine), with ids unique across all
// of them. Problems name the file as on disk.
func LoadAll(builtin fs.FS, dir string, extra []string) ([]*Rule, error) {
	all, err := Load(builtin, dir)
	if err != nil {
		return nil, fmt.Errorf("built-in rules: %w", err)
	}
	seen := map[string]string{}
	for _, r := range all {
		seen[r.ID] = r.File
	}
	var ps []Problem
	for _, root := range extra {
		more, mps := parseDir(os.DirFS(root), dir)
		for _, p := range mps {
			p.File = filepath.Join(root, p.File)
			ps = append(ps, p)
		}
		for _, r := range more {
			r.File = filepath.Join(root, r.File)
			if prev, dup := seen[r.ID]; dup {
				ps = append(ps, Problem{File: r.File, Reason: fmt.Sprintf("rule id %s already defined in %s", r.ID, prev)})
				continue
			}
			seen[r.ID] = r.File
			all = append(all, r)
		}
	}
	if len(ps) > 0 {
		return nil, problemsErr(ps)
	}
	return all, nil
}

func problemsErr(ps []Problem) error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = errors.New(p.String())
	}
	return errors.Join(errs...)
}

// LintDir checks every rule file in dir of fsys: it parses, its logsource
// is one the sensor has events for, every field is in Fields, every
// modifier is one the engine implements, the condition only names searches
// the rule has, and the rule has at least one positive and one negative
// sample under dir/tests/<file stem>/{positive,negative}/*.json.
func LintDir(fsys fs.FS, dir string) []Problem {
	_, ps := parseDir(fsys, dir)
	files, _ := ruleFiles(fsys, dir)
	stems := map[string]bool{}
	for _, f := range files {
		stem := stemOf(f)
		stems[stem] = true
		for _, kind := range []string{"positive", "negative"} {
			if len(samples(fsys, dir, stem, kind)) == 0 {
				ps = append(ps, Problem{File: f, Reason: fmt.Sprintf("no %s samples: add ECS event JSON files under %s/ beside the rule", kind, path.Join("tests", stem, kind))})
			}
		}
	}
	// Samples for a rule that is gone would never run again.
	if ents, err := fs.ReadDir(fsys, path.Join(dir, "tests")); err == nil {
		for _, e := range ents {
			if e.IsDir() && !stems[e.Name()] {
				ps = append(ps, Problem{File: path.Join(dir, "tests", e.Name()), Reason: "samples for a rule file that does not exist (" + e.Name() + ".yml)"})
			}
		}
	}
	return ps
}

// TestDir runs every rule's samples: each positive sample must match the
// rule, each negative sample must not. Samples go through the same
// category and field mapping as live events.
func TestDir(fsys fs.FS, dir string) []Problem {
	rs, ps := parseDir(fsys, dir)
	for _, r := range rs {
		stem := stemOf(r.File)
		for _, kind := range []string{"positive", "negative"} {
			for _, sp := range samples(fsys, dir, stem, kind) {
				ev, err := readSample(fsys, sp)
				if err != nil {
					ps = append(ps, Problem{File: sp, Reason: err.Error()})
					continue
				}
				ok, err := r.Matches(&ev)
				switch {
				case err != nil:
					ps = append(ps, Problem{File: sp, Reason: err.Error()})
				case kind == "positive" && !ok:
					ps = append(ps, Problem{File: sp, Reason: fmt.Sprintf("positive sample does not match rule %s (%s)", r.ID, r.Title)})
				case kind == "negative" && ok:
					ps = append(ps, Problem{File: sp, Reason: fmt.Sprintf("negative sample matches rule %s (%s)", r.ID, r.Title)})
				}
			}
		}
	}
	return ps
}

func stemOf(file string) string {
	b := path.Base(file)
	return strings.TrimSuffix(b, path.Ext(b))
}

func samples(fsys fs.FS, dir, stem, kind string) []string {
	m, _ := fs.Glob(fsys, path.Join(dir, "tests", stem, kind, "*.json"))
	sort.Strings(m)
	return m
}

// parseDir parses every rule file of dir, returning the good rules and
// every problem found.
func parseDir(fsys fs.FS, dir string) ([]*Rule, []Problem) {
	files, err := ruleFiles(fsys, dir)
	if err != nil {
		return nil, []Problem{{File: dir, Reason: err.Error()}}
	}
	var out []*Rule
	var ps []Problem
	seen := map[string]string{}
	for _, f := range files {
		r, fps := parseFile(fsys, f)
		ps = append(ps, fps...)
		if r == nil || len(fps) > 0 {
			continue
		}
		if prev, dup := seen[r.ID]; dup {
			ps = append(ps, Problem{File: f, Reason: fmt.Sprintf("rule id %s already defined in %s", r.ID, prev)})
			continue
		}
		seen[r.ID] = f
		out = append(out, r)
	}
	return out, ps
}

// parseFile parses and checks one rule file. The rule is nil when the file
// does not parse at all.
func parseFile(fsys fs.FS, name string) (*Rule, []Problem) {
	raw, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, []Problem{{File: name, Reason: err.Error()}}
	}
	if len(raw) > MaxFileSize {
		return nil, []Problem{{File: name, Reason: fmt.Sprintf("larger than %d bytes", MaxFileSize)}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, []Problem{yamlProblem(name, err)}
	}
	sr, err := sigmago.ParseRule(raw)
	if err != nil {
		return nil, []Problem{yamlProblem(name, err)}
	}
	c := checker{file: name, lines: keyLines(&root)}
	r := c.check(sr)
	return r, c.ps
}

func yamlProblem(name string, err error) Problem {
	p := Problem{File: name, Reason: "does not parse: " + err.Error()}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
	}
	return p
}

// keyLines maps "key" and "key.sub" of the top two mapping levels to their
// line, for problems the engine's AST carries no position for.
func keyLines(root *yaml.Node) map[string]int {
	lines := map[string]int{}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return lines
	}
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		lines[k.Value] = k.Line
		if v.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(v.Content); j += 2 {
				lines[k.Value+"."+v.Content[j].Value] = v.Content[j].Line
			}
		}
	}
	return lines
}
