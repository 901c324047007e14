// Parsing: a Sigma rule is parsed, checked and compiled in one pass, so the
// line of each offending key and the compiled matchers come from the same
// walk of the YAML (about 500 lines, kept together for that reason).

package sigma

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ruleParser collects the problems of one file.
type ruleParser struct {
	file string
	ps   []Problem
	na   []string // not-applicable reasons
}

func (c *ruleParser) add(level string, line int, f string, a ...any) {
	c.ps = append(c.ps, Problem{File: c.file, Line: line, Level: level, Reason: fmt.Sprintf(f, a...)})
}

func (c *ruleParser) bad(line int, f string, a ...any) { c.add(LevelError, line, f, a...) }

func (c *ruleParser) warn(line int, f string, a ...any) { c.add(LevelWarning, line, f, a...) }

func (c *ruleParser) failed() bool {
	return slices.ContainsFunc(c.ps, func(p Problem) bool { return p.Level == LevelError })
}

// parseRule parses one rule file's bytes. The rule is nil when it has an
// error; warnings come with a rule. A not-applicable rule is returned with
// NotApplicable set.
func parseRule(file string, raw []byte) (*Rule, []Problem) {
	c := &ruleParser{file: file}
	if len(raw) > MaxFileSize {
		c.bad(0, "larger than %d bytes", MaxFileSize)
		return nil, c.ps
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		c.ps = append(c.ps, yamlProblem(file, err))
		return nil, c.ps
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		c.bad(more.Line, "more than one YAML document: %s", otherRuleTypes["action"])
		return nil, c.ps
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		c.bad(root.Line, "not a Sigma rule: want a YAML mapping")
		return nil, c.ps
	}
	r := &Rule{File: file}
	top := root.Content[0]
	var logsource, detection *yaml.Node
	detectionLine := 0
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if why, ok := otherRuleTypes[k.Value]; ok {
			c.bad(k.Line, "%s", why)
			return nil, c.ps
		}
		switch k.Value {
		case "title":
			r.Title = c.str(k, v, true)
		case "id":
			r.ID = c.str(k, v, true)
		case "status":
			r.Status = c.str(k, v, false)
		case "description":
			r.Description = strings.TrimSpace(c.str(k, v, false))
		case "author":
			for _, a := range strings.Split(c.str(k, v, false), ",") {
				if a = strings.TrimSpace(a); a != "" {
					r.Authors = append(r.Authors, a)
				}
			}
		case "level":
			r.Level = c.str(k, v, true)
		case "references":
			if refs := c.strs(k, v); len(refs) > 0 {
				r.Reference = refs[0]
			}
		case "tags":
			for _, t := range c.strs(k, v) {
				t = strings.ToLower(t)
				if m := techniqueTag.FindStringSubmatch(t); m != nil {
					r.Techniques = append(r.Techniques, strings.ToUpper(m[1]))
				} else if tq, ok := tactics[strings.TrimPrefix(t, "attack.")]; ok && strings.HasPrefix(t, "attack.") && r.Tactic == nil {
					r.Tactic = &tq
				}
			}
		case "logsource":
			logsource = v
		case "detection":
			detection, detectionLine = v, k.Line
		default:
			// The rest of the specification (name, related, taxonomy,
			// license, date, modified, fields, falsepositives, scope)
			// describes the rule for people and converters; the
			// sensor does not use it.
			if !specKeys[k.Value] {
				c.warn(k.Line, "unknown attribute %q (not in the Sigma rule specification; ignored)", k.Value)
			}
		}
	}
	if r.ID == "" {
		c.bad(0, "id is required (it becomes rule.id)")
	}
	if r.Title == "" {
		c.bad(0, "title is required (it becomes rule.name)")
	}
	sev, ok := Severities[strings.ToLower(r.Level)]
	switch {
	case ok:
		r.Level = strings.ToLower(r.Level)
		r.Severity = sev
	case r.Level == "":
		// The specification makes level optional; medium is the
		// middle of the range and said so.
		c.warn(0, "no level: severity medium (47) assumed")
		r.Level, r.Severity = "medium", Severities["medium"]
	default:
		c.bad(top.Line, "level %q: want informational, low, medium, high or critical", r.Level)
	}
	if logsource == nil {
		c.bad(0, "logsource is required")
	} else {
		c.logsource(r, logsource)
	}
	if detection == nil {
		c.bad(0, "detection is required")
	} else {
		c.detection(r, detection, detectionLine)
	}
	if c.failed() {
		return nil, c.ps
	}
	if len(c.na) > 0 {
		r.NotApplicable = strings.Join(c.na, "; ")
	}
	for _, n := range r.names {
		r.ordered = append(r.ordered, r.searches[n])
	}
	for _, e := range r.conds {
		r.run = append(r.run, compileExpr(e, r.names))
	}
	return r, c.ps
}

func (c *ruleParser) str(k, v *yaml.Node, required bool) string {
	if v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
		return v.Value
	}
	if v.Tag == "!!null" {
		return ""
	}
	if required {
		c.bad(k.Line, "%s: want a string", k.Value)
	} else {
		c.warn(k.Line, "%s: want a string (ignored)", k.Value)
	}
	return ""
}

func (c *ruleParser) strs(k, v *yaml.Node) []string {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil
		}
		return []string{v.Value}
	case yaml.SequenceNode:
		var out []string
		for _, e := range v.Content {
			if e.Kind == yaml.ScalarNode {
				out = append(out, e.Value)
			}
		}
		return out
	}
	c.warn(k.Line, "%s: want a list of strings (ignored)", k.Value)
	return nil
}

func (c *ruleParser) logsource(r *Rule, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		c.bad(n.Line, "logsource: want a mapping")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "category":
			r.Category = strings.ToLower(c.str(k, v, false))
		case "product":
			r.Product = strings.ToLower(c.str(k, v, false))
		case "service":
			r.Service = strings.ToLower(c.str(k, v, false))
		case "definition":
		default:
			c.warn(k.Line, "unknown logsource attribute %q (ignored)", k.Value)
		}
	}
	switch {
	case r.Product != "" && productOS[r.Product] == "":
		c.na = append(c.na, fmt.Sprintf("logsource product %s: the sensor sees its own host's process and file events (linux, windows, macos)", r.Product))
	case r.Service != "":
		c.na = append(c.na, fmt.Sprintf("logsource service %s: the sensor evaluates its own process and file events, not that log", r.Service))
	case r.Category == "":
		c.na = append(c.na, "logsource without a category: the sensor has process_creation and file_event events")
	case Fields[r.Category] == nil:
		c.na = append(c.na, fmt.Sprintf("logsource category %s: the sensor has no such events (it has %s, %s)", r.Category, CategoryProcess, CategoryFile))
	}
}

func (c *ruleParser) detection(r *Rule, n *yaml.Node, line int) {
	if n.Kind != yaml.MappingNode {
		c.bad(line, "detection: want a mapping")
		return
	}
	r.searches = map[string]*search{}
	broken := map[string]bool{}  // searches already reported
	never := map[string]string{} // searches that cannot match here, and why
	var condNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "condition":
			condNode = v
		case "timeframe":
			c.na = append(c.na, "timeframe (an aggregation window) is not supported")
		default:
			s, err := c.search(r, k, v)
			if err != nil {
				var le *lineError
				switch {
				case isNA(err):
					// Like a missing field in a log, the search never
					// matches; whether the rule can still fire is
					// decided below.
					r.searches[k.Value] = &search{line: k.Line, never: true}
					r.names = append(r.names, k.Value)
					never[k.Value] = err.Error()
					continue
				case errors.As(err, &le):
					c.bad(le.line, "search %s: %v", k.Value, le.err)
				default:
					c.bad(k.Line, "search %s: %v", k.Value, err)
				}
				broken[k.Value] = true
				continue
			}
			r.searches[k.Value] = s
			r.names = append(r.names, k.Value)
		}
	}
	sort.Strings(r.names)
	if condNode == nil {
		c.bad(line, "detection has no condition")
		return
	}
	var conds []*yaml.Node
	switch condNode.Kind {
	case yaml.ScalarNode:
		conds = []*yaml.Node{condNode}
	case yaml.SequenceNode:
		conds = condNode.Content
	default:
		c.bad(condNode.Line, "condition: want a string or a list of strings")
		return
	}
	for _, cn := range conds {
		if cn.Kind != yaml.ScalarNode {
			c.bad(cn.Line, "condition: want a string")
			continue
		}
		e, err := parseCondition(cn.Value)
		if err != nil {
			if strings.Contains(err.Error(), "aggregations") {
				c.na = append(c.na, "condition: "+err.Error())
			} else {
				c.bad(cn.Line, "condition %q: %v", cn.Value, err)
			}
			continue
		}
		for _, id := range e.idents() {
			if strings.ContainsAny(id, "*?") {
				fits := func(n string) bool { return (ofExpr{pattern: id}).matching([]string{n}) != nil }
				if !slices.ContainsFunc(r.names, fits) && !slices.ContainsFunc(slices.Collect(maps.Keys(broken)), fits) {
					c.bad(cn.Line, "condition: no search matches %s", id)
				}
			} else if !slices.Contains(r.names, id) && !broken[id] {
				c.bad(cn.Line, "condition names %s, which is not a search of this rule", id)
			}
		}
		r.conds = append(r.conds, e)
	}
	if len(never) > 0 && len(r.conds) > 0 && !c.failed() {
		names := slices.Sorted(maps.Keys(never))
		var whys []string
		for _, n := range names {
			whys = append(whys, never[n])
		}
		if !satisfiable(r, never) {
			c.na = append(c.na, strings.Join(whys, "; "))
		} else {
			for _, n := range names {
				c.warn(r.searches[n].line, "search %s never matches here (%s); the rule runs without it", n, never[n])
			}
		}
	}
}

// maxSatSearches bounds the searches satisfiable tries every combination
// of; beyond it the rule is assumed to be able to fire.
const maxSatSearches = 12

// satisfiable reports whether some outcome of the searches that can match
// makes a condition true while the never-matching ones are false: else the
// rule is dead on tillwatch's events and is not applicable.
func satisfiable(r *Rule, never map[string]string) bool {
	var free []string
	for _, n := range r.names {
		if _, ok := never[n]; !ok {
			free = append(free, n)
		}
	}
	if len(free) > maxSatSearches {
		return true
	}
	for bits := 0; bits < 1<<len(free); bits++ {
		res := func(name string) bool {
			i := slices.Index(free, name)
			return i >= 0 && bits&(1<<i) != 0
		}
		for _, c := range r.conds {
			if c.eval(res, r.names) {
				return true
			}
		}
	}
	return false
}

// lineError is an error at a line of the file.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return e.err.Error() }

// search compiles one named search: a mapping (all fields match), a list
// of mappings (any of them) or a list of keywords (any, or all with
// NAME|all).
func (c *ruleParser) search(r *Rule, k, v *yaml.Node) (*search, error) {
	s := &search{line: k.Line}
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		em, err := c.eventMatcher(r, k.Value, v)
		if err != nil {
			return nil, err
		}
		s.anyOf = [][]*fieldMatcher{em}
	case yaml.SequenceNode:
		if len(v.Content) == 0 {
			return nil, fmt.Errorf("empty list")
		}
		var dropped []string
		for _, e := range v.Content {
			switch e.Kind {
			case yaml.MappingNode:
				if s.keywords != nil {
					return nil, fmt.Errorf("mixes keywords and field maps")
				}
				em, err := c.eventMatcher(r, k.Value, e)
				if isNA(err) {
					// An alternative on a field the sensor has no value
					// for can never match (a missing field matches
					// nothing); the others still can.
					dropped = append(dropped, err.Error())
					c.warn(e.Line, "%v: this alternative never matches here", err)
					continue
				}
				if err != nil {
					return nil, err
				}
				s.anyOf = append(s.anyOf, em)
			case yaml.ScalarNode:
				if s.anyOf != nil {
					return nil, fmt.Errorf("mixes keywords and field maps")
				}
				kp, err := keywordPred(e.Value)
				if err != nil {
					return nil, err
				}
				s.keywords = append(s.keywords, kp)
			default:
				return nil, &lineError{e.Line, fmt.Errorf("want keywords or field maps")}
			}
		}
		if s.anyOf == nil && s.keywords == nil && len(dropped) > 0 {
			return nil, na("%s", strings.Join(dropped, "; "))
		}
	case yaml.ScalarNode:
		// A single keyword.
		kp, err := keywordPred(v.Value)
		if err != nil {
			return nil, err
		}
		s.keywords = []func(record) bool{kp}
	default:
		return nil, fmt.Errorf("want a mapping or a list")
	}
	return s, nil
}

func (c *ruleParser) eventMatcher(r *Rule, name string, n *yaml.Node) ([]*fieldMatcher, error) {
	var em []*fieldMatcher
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		parts := strings.Split(k.Value, "|")
		field, mods := parts[0], parts[1:]
		vals, err := nodeValues(v)
		if err != nil {
			return nil, &lineError{k.Line, fmt.Errorf("field %s: %w", field, err)}
		}
		fm, err := compileField(field, mods, vals)
		if err != nil {
			if isNA(err) {
				return nil, na("search %s: %v", name, err)
			}
			return nil, &lineError{k.Line, err}
		}
		if field != "" && r.Category != "" && Fields[r.Category] != nil {
			if why := fieldNA(r.Category, field); why != "" {
				return nil, na("search %s: %s", name, why)
			}
		}
		em = append(em, fm)
	}
	return em, nil
}

// nodeValues is a field's value(s): a scalar or a list of scalars.
func nodeValues(v *yaml.Node) ([]any, error) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.ScalarNode:
		return []any{scalarNode(v)}, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(v.Content))
		for _, e := range v.Content {
			if e.Kind == yaml.AliasNode {
				e = e.Alias
			}
			if e.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("a list of values must hold scalars")
			}
			out = append(out, scalarNode(e))
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("empty list of values")
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a value or a list of values")
}

// scalarNode keeps a scalar as written (numbers and dates as their text,
// so 010 stays 010), except null and booleans, which exists and null
// checks need.
func scalarNode(n *yaml.Node) any {
	switch n.Tag {
	case "!!null":
		return nil
	case "!!bool":
		if b, err := strconv.ParseBool(strings.ToLower(n.Value)); err == nil {
			return b
		}
	}
	return n.Value
}

func yamlProblem(name string, err error) Problem {
	p := Problem{File: name, Level: LevelError, Reason: "does not parse: " + err.Error()}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
	}
	return p
}
