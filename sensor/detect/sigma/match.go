package sigma

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// This file compiles Sigma field matchers ("Field|mod|mod: values") into
// predicates over an event's values, implementing every value modifier of
// the current specification (the string transforms are in transform.go),
// and evaluates a compiled rule's searches on a record. The engine library implements only part of
// them (no windash, base64offset, cased, exists, fieldref, utf16*, and its
// "re" recompiles per event), so matching is done here; see docs/rules.md.

// notApplicable is a reason a rule cannot run on tillwatch's events although
// it is valid Sigma: the rule is skipped with this reason, not refused.
type notApplicable struct{ reason string }

func (n *notApplicable) Error() string { return n.reason }

func na(f string, a ...any) error { return &notApplicable{fmt.Sprintf(f, a...)} }

// isNA reports whether err is a not-applicable reason.
func isNA(err error) bool {
	var n *notApplicable
	return errors.As(err, &n)
}

// record is one event as the matcher sees it: Sigma field name -> value
// ("" is a missing value), and each value lower-cased once per event, so
// that case-insensitive comparisons do not lower-case per rule.
type record struct {
	raw, low map[string]string
}

func newRecord(n int) record {
	return record{raw: make(map[string]string, n), low: make(map[string]string, n)}
}

func (r record) set(k, v string) {
	r.raw[k] = v
	r.low[k] = strings.ToLower(v)
}

// pred is one compiled value of a field matcher: v is the field's value,
// lv the same lower-cased.
type pred func(v, lv string, r record) bool

// fieldMatcher is one "Field|modifiers: values" of a search.
type fieldMatcher struct {
	field string
	all   bool // "all": every value must match, else any
	preds []pred
}

func (m *fieldMatcher) match(r record) bool {
	if m.field == "" {
		// "|contains: x" without a field name: a keyword with modifiers.
		for k, v := range r.raw {
			if v != "" && m.matchValue(v, r.low[k], r) {
				return true
			}
		}
		return false
	}
	return m.matchValue(r.raw[m.field], r.low[m.field], r)
}

func (m *fieldMatcher) matchValue(v, lv string, r record) bool {
	for _, p := range m.preds {
		ok := p(v, lv, r)
		if ok && !m.all {
			return true
		}
		if !ok && m.all {
			return false
		}
	}
	return m.all && len(m.preds) > 0
}

// Modifiers lists every modifier of the Sigma specification and what
// tillwatch does with it, for docs and lint messages.
var Modifiers = map[string]string{
	"contains": "substring", "startswith": "prefix", "endswith": "suffix", "all": "every value must match",
	"base64": "value base64-encoded", "base64offset": "value base64-encoded at the three offsets",
	"utf16le": "value UTF-16LE-encoded (before base64)", "wide": "same as utf16le",
	"utf16be": "value UTF-16BE-encoded", "utf16": "value UTF-16 with BOM",
	"windash": "- and / at an option's start also match /, -, en dash, em dash, horizontal bar",
	"cased":   "case-sensitive", "exists": "the field has (true) or has no (false) value",
	"re": "RE2 regular expression (case-sensitive; i, m, s flags)", "i": "re: ignore case", "m": "re: multi-line", "s": "re: dot matches newline",
	"cidr": "IPv4/IPv6 network", "lt": "number <", "lte": "number <=", "gt": "number >", "gte": "number >=",
	"fieldref": "value names another field whose value is compared",
	"expand":   "placeholder %name%: not applicable (no placeholder values are configured)",
}

// timeModifiers pick a part of a timestamp; tillwatch's Sigma fields carry
// none.
var timeModifiers = map[string]bool{"minute": true, "hour": true, "day": true, "week": true, "month": true, "year": true}

type modSet struct {
	cmp        string // "", contains, startswith, endswith, re, cidr, lt, lte, gt, gte, exists
	fieldref   bool
	cased      bool
	reFlags    string
	transforms []string // in rule order: utf16le/utf16be/utf16/wide, base64, base64offset, windash
}

func parseMods(field string, mods []string) (modSet, bool, error) {
	var ms modSet
	all := false
	setCmp := func(m string) error {
		if ms.cmp != "" && ms.cmp != m {
			return fmt.Errorf("field %s: modifiers %s and %s exclude each other", field, ms.cmp, m)
		}
		ms.cmp = m
		return nil
	}
	for _, m := range mods {
		switch m {
		case "contains", "startswith", "endswith", "re", "cidr", "lt", "lte", "gt", "gte", "exists":
			if err := setCmp(m); err != nil {
				return ms, false, err
			}
		case "i", "m", "s":
			ms.reFlags += m
		case "all":
			all = true
		case "cased":
			ms.cased = true
		case "fieldref":
			ms.fieldref = true
		case "base64", "base64offset", "utf16le", "wide", "utf16be", "utf16", "windash":
			ms.transforms = append(ms.transforms, m)
		case "expand":
			return ms, false, na("field %s: |expand needs placeholder values, which tillwatch does not configure", field)
		default:
			if timeModifiers[m] {
				return ms, false, na("field %s: time modifier %s (tillwatch's Sigma fields carry no timestamps)", field, m)
			}
			return ms, false, fmt.Errorf("field %s: unknown modifier %s", field, m)
		}
	}
	if ms.reFlags != "" && ms.cmp != "re" {
		return ms, false, fmt.Errorf("field %s: modifiers %s only go with re", field, strings.Join(strings.Split(ms.reFlags, ""), ", "))
	}
	if len(ms.transforms) > 0 {
		switch ms.cmp {
		case "re", "cidr", "lt", "lte", "gt", "gte", "exists":
			return ms, false, fmt.Errorf("field %s: %s cannot follow value encodings", field, ms.cmp)
		}
	}
	return ms, all, nil
}

// maxVariants bounds how many strings one value may expand to.
const maxVariants = 64

// compileField builds the matcher of one field.
func compileField(field string, mods []string, values []any) (*fieldMatcher, error) {
	ms, all, err := parseMods(field, mods)
	if err != nil {
		return nil, err
	}
	fm := &fieldMatcher{field: field, all: all}
	if len(values) == 0 {
		return nil, fmt.Errorf("field %s: no value", field)
	}
	for _, v := range values {
		p, err := compileValue(field, ms, v)
		if err != nil {
			return nil, err
		}
		fm.preds = append(fm.preds, p)
	}
	return fm, nil
}

func compileValue(field string, ms modSet, v any) (pred, error) {
	if v == nil {
		// null: the field has no value.
		return func(a, _ string, _ record) bool { return a == "" }, nil
	}
	s, err := scalar(v)
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", field, err)
	}
	switch {
	case ms.cmp == "exists":
		want, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("field %s: exists takes true or false, not %q", field, s)
		}
		return func(a, _ string, _ record) bool { return (a != "") == want }, nil
	case ms.fieldref:
		if ms.cmp == "re" || ms.cmp == "cidr" || strings.HasPrefix(ms.cmp, "l") || strings.HasPrefix(ms.cmp, "g") {
			return nil, fmt.Errorf("field %s: fieldref does not go with %s", field, ms.cmp)
		}
		ref, cmp, cased := s, ms.cmp, ms.cased
		return func(a, _ string, r record) bool {
			b := r.raw[ref]
			if !cased {
				a, b = strings.ToLower(a), strings.ToLower(b)
			}
			switch cmp {
			case "contains":
				return strings.Contains(a, b)
			case "startswith":
				return strings.HasPrefix(a, b)
			case "endswith":
				return strings.HasSuffix(a, b)
			}
			return a == b
		}, nil
	case ms.cmp == "re":
		flags := ""
		if strings.Contains(ms.reFlags, "i") {
			flags += "i"
		}
		if strings.Contains(ms.reFlags, "m") {
			flags += "m"
		}
		if strings.Contains(ms.reFlags, "s") {
			flags += "s"
		}
		if flags != "" {
			s = "(?" + flags + ")" + s
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("field %s: re: %w", field, err)
		}
		return func(a, _ string, _ record) bool { return re.MatchString(a) }, nil
	case ms.cmp == "cidr":
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("field %s: cidr: %w", field, err)
		}
		pfx = pfx.Masked()
		return func(a, _ string, _ record) bool {
			ip, err := netip.ParseAddr(a)
			return err == nil && pfx.Contains(ip.Unmap())
		}, nil
	case ms.cmp == "lt" || ms.cmp == "lte" || ms.cmp == "gt" || ms.cmp == "gte":
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(want) {
			return nil, fmt.Errorf("field %s: %s needs a number, not %q", field, ms.cmp, s)
		}
		cmp := ms.cmp
		return func(a, _ string, _ record) bool {
			got, err := strconv.ParseFloat(a, 64)
			if err != nil {
				return false
			}
			switch cmp {
			case "lt":
				return got < want
			case "lte":
				return got <= want
			case "gt":
				return got > want
			}
			return got >= want
		}, nil
	}
	return compileString(field, ms, s)
}

// scalar renders a YAML scalar as Sigma compares it.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("value %v is not a string, number or boolean", v)
}

// compileString handles the default (equals), contains, startswith and
// endswith comparisons, with wildcards and the value encodings.
func compileString(field string, ms modSet, s string) (pred, error) {
	// A value run through an encoding is compared literally: wildcards in
	// it would be encoded too.
	var globs [][]globPart
	if len(ms.transforms) > 0 {
		vs := []string{unescape(s)}
		for _, t := range ms.transforms {
			vs = transform(t, vs)
			if len(vs) > maxVariants {
				return nil, fmt.Errorf("field %s: value expands to more than %d variants", field, maxVariants)
			}
		}
		for _, v := range vs {
			globs = append(globs, []globPart{{lit: v}})
		}
	} else {
		globs = append(globs, parseGlob(s))
	}
	var ps []pred
	for _, g := range globs {
		p, err := globPred(g, ms.cmp, ms.cased)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", field, err)
		}
		ps = append(ps, p)
	}
	if len(ps) == 1 {
		return ps[0], nil
	}
	return func(a, la string, r record) bool {
		for _, p := range ps {
			if p(a, la, r) {
				return true
			}
		}
		return false
	}, nil
}

// search is one named search of a rule's detection.
type search struct {
	line     int
	never    bool              // not applicable here: never matches
	anyOf    [][]*fieldMatcher // a list of maps: any map whose fields all match
	keywords []func(record) bool
	allKeys  bool // keywords: all must match (a list under "keywords|all")
}

func (s *search) match(r record) bool {
	if s.never {
		return false
	}
	if s.keywords != nil {
		for _, k := range s.keywords {
			ok := k(r)
			if ok && !s.allKeys {
				return true
			}
			if !ok && s.allKeys {
				return false
			}
		}
		return s.allKeys
	}
	for _, em := range s.anyOf {
		ok := true
		for _, fm := range em {
			if !fm.match(r) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// matchRecord reports whether the record satisfies any of the rule's
// conditions; each search is evaluated at most once.
func (r *Rule) matchRecord(rec record) bool {
	var buf [32]int8 // 0 unknown, 1 match, 2 no match
	memo := buf[:0]
	if len(r.ordered) <= len(buf) {
		memo = buf[:len(r.ordered)]
	} else {
		memo = make([]int8, len(r.ordered))
	}
	res := func(i int) bool {
		switch memo[i] {
		case 1:
			return true
		case 2:
			return false
		}
		ok := r.ordered[i].match(rec)
		memo[i] = 2
		if ok {
			memo[i] = 1
		}
		return ok
	}
	for _, c := range r.run {
		if c(res) {
			return true
		}
	}
	return false
}
