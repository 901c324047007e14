package sigma

// The rule checker: what LintDir reports about a parsed rule, with the line
// of the offending key. The engine accepts more than the sensor can
// evaluate on its own events; this is where the difference is refused.

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	sigmago "github.com/bradleyjkemp/sigma-go"
	"github.com/bradleyjkemp/sigma-go/evaluator"
	"github.com/bradleyjkemp/sigma-go/evaluator/modifiers"
)

// checker collects the problems of one rule file.
type checker struct {
	file  string
	lines map[string]int
	ps    []Problem
}

func (c *checker) bad(line int, f string, a ...any) {
	c.ps = append(c.ps, Problem{File: c.file, Line: line, Reason: fmt.Sprintf(f, a...)})
}

func (c *checker) check(sr sigmago.Rule) *Rule {
	r := &Rule{
		File: c.file, ID: sr.ID, Title: sr.Title, Description: strings.TrimSpace(sr.Description),
		Level: sr.Level, Category: sr.Logsource.Category, Product: sr.Logsource.Product,
	}
	for k := range sr.AdditionalFields {
		c.bad(c.lines[k], "unknown attribute %q (not in the Sigma rule specification)", k)
	}
	if r.ID == "" {
		c.bad(0, "id is required (it becomes rule.id)")
	}
	if r.Title == "" {
		c.bad(0, "title is required (it becomes rule.name)")
	}
	sev, ok := Severities[r.Level]
	if !ok {
		c.bad(c.lines["level"], "level %q: want informational, low, medium, high or critical", r.Level)
	}
	r.Severity = sev
	if len(sr.References) > 0 {
		r.Reference = sr.References[0]
	}
	for _, a := range strings.Split(sr.Author, ",") {
		if a = strings.TrimSpace(a); a != "" {
			r.Authors = append(r.Authors, a)
		}
	}
	for _, t := range sr.Tags {
		t = strings.ToLower(t)
		if m := techniqueTag.FindStringSubmatch(t); m != nil {
			r.Techniques = append(r.Techniques, strings.ToUpper(m[1]))
		} else if tq, ok := tactics[strings.TrimPrefix(t, "attack.")]; ok && strings.HasPrefix(t, "attack.") && r.Tactic == nil {
			r.Tactic = &tq
		}
	}

	c.checkLogsource(sr.Logsource)
	fields := Fields[r.Category]
	if len(fields) == 0 {
		fields = nil // unsupported category: field checks would only repeat that
	}
	c.checkDetection(sr.Detection, fields)
	if len(c.ps) > 0 {
		return r
	}
	r.eval = evaluator.ForRule(sr)
	return r
}

func (c *checker) checkLogsource(ls sigmago.Logsource) {
	if ls.Category != CategoryProcess && ls.Category != CategoryFile {
		c.bad(c.lines["logsource.category"], "logsource category %q is not supported (supported: %s, %s)", ls.Category, CategoryProcess, CategoryFile)
	}
	switch ls.Product {
	case "", "linux", "windows":
	default:
		c.bad(c.lines["logsource.product"], "logsource product %q is not supported (supported: linux, windows, or none)", ls.Product)
	}
	if ls.Service != "" {
		c.bad(c.lines["logsource.service"], "logsource service %q is not supported: the sensor evaluates its own process and file events", ls.Service)
	}
	for k := range ls.AdditionalFields {
		c.bad(c.lines["logsource."+k], "unknown logsource attribute %q", k)
	}
}

// supportedModifiers is what the engine implements, read from its own
// tables so an engine upgrade is picked up; "all" is handled by the
// evaluator itself, as the last modifier only.
func supportedModifiers() []string {
	set := map[string]bool{"all": true}
	for k := range modifiers.Comparators {
		set[k] = true
	}
	for k := range modifiers.ValueModifiers {
		set[k] = true
	}
	for k := range modifiers.EventValueModifiers {
		set[k] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c *checker) checkDetection(d sigmago.Detection, fields []Field) {
	if d.Timeframe != 0 {
		c.bad(c.lines["detection.timeframe"], "timeframe is not supported (no aggregations)")
	}
	if len(d.Searches) == 0 {
		c.bad(c.lines["detection"], "detection has no search")
	}
	var known []string // nil: the category is unsupported, fields are not checked
	for _, f := range fields {
		known = append(known, f.Name)
	}
	mods := supportedModifiers()
	names := slices.Sorted(maps.Keys(d.Searches))
	for _, name := range names {
		s := d.Searches[name]
		sl, _ := s.Position()
		if len(s.Keywords) > 0 {
			c.bad(sl+1, "search %s: keyword searches are not supported (name a field)", name)
			continue
		}
		for _, em := range s.EventMatchers {
			for _, fm := range em {
				l, _ := fm.Position()
				c.checkField(l+1, fm, known, mods)
			}
		}
	}
	if len(d.Conditions) == 0 {
		c.bad(c.lines["detection"], "detection has no condition")
	}
	for _, cond := range d.Conditions {
		l, _ := cond.Position()
		if cond.Aggregation != nil {
			c.bad(l+1, "condition: aggregations (| count() ...) are not supported")
		}
		c.checkExpr(l+1, cond.Search, d.Searches)
	}
}

func (c *checker) checkField(line int, fm sigmago.FieldMatcher, known, mods []string) {
	if known != nil && !slices.Contains(known, fm.Field) {
		c.bad(line, "unknown field %s (supported: %s)", fm.Field, strings.Join(known, ", "))
	}
	ms := fm.Modifiers
	if n := len(ms); n > 0 && ms[n-1] == "all" {
		ms = ms[:n-1]
	}
	unsupported := false
	for _, m := range ms {
		if !slices.Contains(mods, m) || m == "all" {
			c.bad(line, "field %s: unsupported modifier %s (supported: %s; all only last)", fm.Field, m, strings.Join(mods, ", "))
			unsupported = true
		}
	}
	if !unsupported {
		if _, err := modifiers.GetComparator(fm.Field, modifiers.Comparators, ms...); err != nil {
			c.bad(line, "field %s: %v", fm.Field, err)
		}
	}
	for _, v := range fm.Values {
		switch v := v.(type) {
		case string:
			if len(v) > 1 && strings.HasPrefix(v, "%") && strings.HasSuffix(v, "%") {
				c.bad(line, "field %s: placeholder %s is not supported", fm.Field, v)
			}
		case int, float64, bool:
		case nil:
			c.bad(line, "field %s: null values are not supported (use '' for an empty value)", fm.Field)
		default:
			c.bad(line, "field %s: value %v is not a string or number", fm.Field, v)
		}
	}
}

// checkExpr reports condition parts that would silently never match: a
// name that is not a search, a pattern no search fits, and "1 of name"
// without a wildcard, which this engine cannot evaluate.
func (c *checker) checkExpr(line int, e sigmago.SearchExpr, searches map[string]sigmago.Search) {
	anyMatch := func(pat string) bool {
		for name := range searches {
			if ok, _ := path.Match(pat, name); ok {
				return true
			}
		}
		return false
	}
	switch e := e.(type) {
	case sigmago.And:
		for _, x := range e {
			c.checkExpr(line, x, searches)
		}
	case sigmago.Or:
		for _, x := range e {
			c.checkExpr(line, x, searches)
		}
	case sigmago.Not:
		c.checkExpr(line, e.Expr, searches)
	case sigmago.SearchIdentifier:
		if _, ok := searches[e.Name]; !ok {
			c.bad(line, "condition names %s, which is not a search of this rule", e.Name)
		}
	case sigmago.OneOfPattern:
		if !anyMatch(e.Pattern) {
			c.bad(line, "condition: no search matches %s", e.Pattern)
		}
	case sigmago.AllOfPattern:
		if !anyMatch(e.Pattern) {
			c.bad(line, "condition: no search matches %s", e.Pattern)
		}
	case sigmago.OneOfIdentifier:
		c.bad(line, "condition: \"1 of %s\" is not supported by the engine; write %s", e.Ident.Name, e.Ident.Name)
	case sigmago.AllOfIdentifier:
		c.bad(line, "condition: \"all of %s\" is not supported by the engine; write %s", e.Ident.Name, e.Ident.Name)
	case sigmago.OneOfThem, sigmago.AllOfThem:
	default:
		c.bad(line, "condition: %T is not supported", e)
	}
}
