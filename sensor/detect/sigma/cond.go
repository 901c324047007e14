package sigma

import (
	"fmt"
	"path"
	"strings"
	"unicode"
)

// The condition grammar of the Sigma specification, parsed here rather than
// by the engine library: its lexer rejects patterns with a digit before the
// wildcard (`all of selection1*`) and it cannot evaluate `1 of NAME`.
//
//	expr    = and { "or" and }
//	and     = not { "and" not }
//	not     = "not" not | primary
//	primary = "(" expr ")" | quant "of" ( "them" | NAME | PATTERN ) | NAME
//	quant   = "1" | "any" | "all"
//
// Keywords are case-insensitive; "|" (an aggregation) is refused.

// expr is a parsed condition; eval reports whether it holds given the
// results of the rule's searches.
type expr interface {
	eval(res func(name string) bool, names []string) bool
	// idents lists every search name or pattern the expression uses, for
	// lint.
	idents() []string
}

type orExpr []expr
type andExpr []expr
type notExpr struct{ x expr }
type identExpr string

// ofExpr is "1 of X" / "all of X": X is "them", a name or a pattern with
// * (and ?) wildcards.
type ofExpr struct {
	all     bool
	pattern string // "" means them
}

func (e orExpr) eval(res func(string) bool, names []string) bool {
	for _, x := range e {
		if x.eval(res, names) {
			return true
		}
	}
	return false
}

func (e andExpr) eval(res func(string) bool, names []string) bool {
	for _, x := range e {
		if !x.eval(res, names) {
			return false
		}
	}
	return true
}

func (e notExpr) eval(res func(string) bool, names []string) bool { return !e.x.eval(res, names) }
func (e identExpr) eval(res func(string) bool, _ []string) bool   { return res(string(e)) }

func (e ofExpr) eval(res func(string) bool, names []string) bool {
	n := 0
	for _, name := range e.matching(names) {
		if res(name) {
			if !e.all {
				return true
			}
		} else if e.all {
			return false
		}
		n++
	}
	return e.all && n > 0
}

// matching lists the search names the quantifier ranges over. "them"
// leaves out names starting with "_", as the specification says.
func (e ofExpr) matching(names []string) []string {
	var out []string
	for _, n := range names {
		if e.pattern == "" {
			if !strings.HasPrefix(n, "_") {
				out = append(out, n)
			}
			continue
		}
		if ok, _ := path.Match(e.pattern, n); ok {
			out = append(out, n)
		}
	}
	return out
}

func (e orExpr) idents() []string    { return flatIdents(e) }
func (e andExpr) idents() []string   { return flatIdents(e) }
func (e notExpr) idents() []string   { return e.x.idents() }
func (e identExpr) idents() []string { return []string{string(e)} }
func (e ofExpr) idents() []string {
	if e.pattern == "" {
		return nil
	}
	return []string{e.pattern}
}

func flatIdents(xs []expr) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.idents()...)
	}
	return out
}

// maxCondition bounds a condition's length and nesting: a rule file is
// untrusted input and recursion must not run away.
const (
	maxCondition = 4096
	maxDepth     = 64
)

type condParser struct {
	toks  []string
	pos   int
	depth int
}

// parseCondition parses one condition string.
func parseCondition(s string) (expr, error) {
	if len(s) > maxCondition {
		return nil, fmt.Errorf("condition longer than %d characters", maxCondition)
	}
	toks, err := lexCondition(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty condition")
	}
	p := &condParser{toks: toks}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		if p.toks[p.pos] == "|" {
			return nil, fmt.Errorf("aggregations (| count() ...) are not supported")
		}
		return nil, fmt.Errorf("unexpected %q at token %d", p.toks[p.pos], p.pos+1)
	}
	return e, nil
}

func lexCondition(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '|':
			// What follows is an aggregation (count() by x > 5): the
			// parser refuses it by this token.
			return append(toks, "|"), nil
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case c == '_' || c == '*' || c == '?' || c == '.' || c == '-' || unicode.IsLetter(c) || unicode.IsDigit(c):
			j := i
			for j < len(s) {
				d := rune(s[j])
				if !(d == '_' || d == '*' || d == '?' || d == '.' || d == '-' || unicode.IsLetter(d) || unicode.IsDigit(d)) {
					break
				}
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q in condition", c)
		}
	}
	return toks, nil
}

func (p *condParser) peek() string {
	if p.pos < len(p.toks) {
		return strings.ToLower(p.toks[p.pos])
	}
	return ""
}

func (p *condParser) or() (expr, error) {
	x, err := p.and()
	if err != nil {
		return nil, err
	}
	xs := orExpr{x}
	for p.peek() == "or" {
		p.pos++
		y, err := p.and()
		if err != nil {
			return nil, err
		}
		xs = append(xs, y)
	}
	if len(xs) == 1 {
		return x, nil
	}
	return xs, nil
}

func (p *condParser) and() (expr, error) {
	x, err := p.not()
	if err != nil {
		return nil, err
	}
	xs := andExpr{x}
	for p.peek() == "and" {
		p.pos++
		y, err := p.not()
		if err != nil {
			return nil, err
		}
		xs = append(xs, y)
	}
	if len(xs) == 1 {
		return x, nil
	}
	return xs, nil
}

func (p *condParser) not() (expr, error) {
	if p.peek() == "not" {
		p.pos++
		if p.depth++; p.depth > maxDepth {
			return nil, fmt.Errorf("condition nested deeper than %d", maxDepth)
		}
		x, err := p.not()
		p.depth--
		if err != nil {
			return nil, err
		}
		return notExpr{x}, nil
	}
	return p.primary()
}

func (p *condParser) primary() (expr, error) {
	t := p.peek()
	switch {
	case t == "":
		return nil, fmt.Errorf("condition ends early")
	case t == "(":
		p.pos++
		if p.depth++; p.depth > maxDepth {
			return nil, fmt.Errorf("condition nested deeper than %d", maxDepth)
		}
		x, err := p.or()
		p.depth--
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, fmt.Errorf("missing )")
		}
		p.pos++
		return x, nil
	case t == "1" || t == "any" || t == "all":
		if p.pos+1 < len(p.toks) && strings.ToLower(p.toks[p.pos+1]) == "of" {
			p.pos += 2
			what := p.peek()
			if what == "" || what == "(" || what == ")" || what == "|" {
				return nil, fmt.Errorf("%s of: missing them or a search name", t)
			}
			raw := p.toks[p.pos]
			p.pos++
			e := ofExpr{all: t == "all"}
			if what != "them" {
				e.pattern = raw
			}
			return e, nil
		}
	}
	switch t {
	case ")", "|", "and", "or", "of", "them":
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos])
	}
	raw := p.toks[p.pos]
	if strings.ContainsAny(raw, "*?") {
		return nil, fmt.Errorf("pattern %s needs \"1 of\" or \"all of\"", raw)
	}
	p.pos++
	return identExpr(raw), nil
}

// compiled is a condition resolved against a rule's search names: search
// i's result comes from res(i), patterns are expanded once at load.
type compiled func(res func(i int) bool) bool

func compileExpr(e expr, names []string) compiled {
	index := func(n string) int {
		for i, x := range names {
			if x == n {
				return i
			}
		}
		return -1
	}
	switch e := e.(type) {
	case orExpr:
		xs := make([]compiled, len(e))
		for i, x := range e {
			xs[i] = compileExpr(x, names)
		}
		return func(res func(int) bool) bool {
			for _, x := range xs {
				if x(res) {
					return true
				}
			}
			return false
		}
	case andExpr:
		xs := make([]compiled, len(e))
		for i, x := range e {
			xs[i] = compileExpr(x, names)
		}
		return func(res func(int) bool) bool {
			for _, x := range xs {
				if !x(res) {
					return false
				}
			}
			return true
		}
	case notExpr:
		x := compileExpr(e.x, names)
		return func(res func(int) bool) bool { return !x(res) }
	case identExpr:
		i := index(string(e))
		return func(res func(int) bool) bool { return i >= 0 && res(i) }
	case ofExpr:
		var idx []int
		for _, n := range e.matching(names) {
			idx = append(idx, index(n))
		}
		all := e.all
		return func(res func(int) bool) bool {
			for _, i := range idx {
				if ok := res(i); ok && !all {
					return true
				} else if !ok && all {
					return false
				}
			}
			return all && len(idx) > 0
		}
	}
	return func(func(int) bool) bool { return false }
}
