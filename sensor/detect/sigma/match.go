package sigma

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf16"
)

// This file compiles Sigma field matchers ("Field|mod|mod: values") into
// predicates over an event's values, implementing every value modifier of
// the current specification. The engine library implements only part of
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

// globPart is a literal run or, when lit is "", one wildcard (* or ?).
type globPart struct {
	lit  string
	wild byte
}

// parseGlob splits a Sigma string into literals and wildcards: * and ?
// are wildcards, \* \? \\ escape them, any other backslash is literal
// (Windows paths).
func parseGlob(s string) []globPart {
	var out []globPart
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			out = append(out, globPart{lit: b.String()})
			b.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '*' || s[i+1] == '?' || s[i+1] == '\\'):
			b.WriteByte(s[i+1])
			i++
		case c == '*' || c == '?':
			flush()
			out = append(out, globPart{wild: c})
		default:
			b.WriteByte(c)
		}
	}
	flush()
	return out
}

func unescape(s string) string {
	var b strings.Builder
	for _, p := range parseGlob(s) {
		if p.wild != 0 {
			b.WriteByte(p.wild)
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

func globPred(g []globPart, cmp string, cased bool) (pred, error) {
	wild := false
	for _, p := range g {
		wild = wild || p.wild != 0
	}
	if !wild {
		lit := ""
		if len(g) == 1 {
			lit = g[0].lit
		}
		if !cased {
			lit = strings.ToLower(lit)
		}
		// pick chooses the raw or the lower-cased value.
		pick := func(a, la string) string {
			if cased {
				return a
			}
			return la
		}
		switch cmp {
		case "contains":
			return func(a, la string, _ record) bool { return strings.Contains(pick(a, la), lit) }, nil
		case "startswith":
			return func(a, la string, _ record) bool { return strings.HasPrefix(pick(a, la), lit) }, nil
		case "endswith":
			return func(a, la string, _ record) bool { return strings.HasSuffix(pick(a, la), lit) }, nil
		}
		return func(a, la string, _ record) bool { return pick(a, la) == lit }, nil
	}
	var b strings.Builder
	// Case-insensitive: the lower-cased pattern against the lower-cased
	// value; RE2's (?i) is much slower.
	b.WriteString("(?s)")
	if cmp == "" || cmp == "startswith" {
		b.WriteString(`\A`)
	}
	for _, p := range g {
		switch p.wild {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			lit := p.lit
			if !cased {
				lit = strings.ToLower(lit)
			}
			b.WriteString(regexp.QuoteMeta(lit))
		}
	}
	if cmp == "" || cmp == "endswith" {
		b.WriteString(`\z`)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, err
	}
	if cased {
		return func(a, _ string, _ record) bool { return re.MatchString(a) }, nil
	}
	return func(_, la string, _ record) bool { return re.MatchString(la) }, nil
}

// windashChars are what an option's leading dash may be written as on
// Windows command lines.
var (
	windashChars = []string{"-", "/", "\u2013", "\u2014", "\u2015"}
	windashAt    = regexp.MustCompile(`(^|[^\w])[-/](\w)`)
)

// transform applies one value encoding to every variant.
func transform(t string, vs []string) []string {
	var out []string
	for _, v := range vs {
		switch t {
		case "base64":
			out = append(out, base64.StdEncoding.EncodeToString([]byte(v)))
		case "base64offset":
			out = append(out, base64Offsets(v)...)
		case "utf16le", "wide":
			out = append(out, utf16Bytes(v, binary.LittleEndian, false))
		case "utf16be":
			out = append(out, utf16Bytes(v, binary.BigEndian, false))
		case "utf16":
			out = append(out, utf16Bytes(v, binary.LittleEndian, true))
		case "windash":
			seen := map[string]bool{}
			for _, d := range windashChars {
				w := windashAt.ReplaceAllString(v, "${1}"+d+"${2}")
				if !seen[w] {
					seen[w] = true
					out = append(out, w)
				}
			}
		}
	}
	return out
}

// base64Offsets is the value base64-encoded as it appears when it starts
// at byte offset 0, 1 or 2 of a longer encoded text: the characters that
// depend on the unknown neighbours are cut off (as pySigma does).
func base64Offsets(v string) []string {
	var out []string
	start := [3]int{0, 2, 3}
	endCut := [3]int{0, 3, 2}
	for i := 0; i < 3; i++ {
		enc := base64.StdEncoding.EncodeToString(append([]byte(strings.Repeat(" ", i)), v...))
		lo, hi := start[i], len(enc)-endCut[(len(v)+i)%3]
		if lo < hi {
			out = append(out, enc[lo:hi])
		}
	}
	return out
}

func utf16Bytes(v string, order binary.AppendByteOrder, bom bool) string {
	u := utf16.Encode([]rune(v))
	b := make([]byte, 0, 2*len(u)+2)
	if bom {
		b = order.AppendUint16(b, 0xfeff)
	}
	for _, c := range u {
		b = order.AppendUint16(b, c)
	}
	return string(b)
}

// keywordPred matches a keyword search value anywhere in any field value
// (the whole event stands in for the log line), case-insensitively, with
// wildcards.
func keywordPred(s string) (func(record) bool, error) {
	g := parseGlob(s)
	p, err := globPred(g, "contains", false)
	if err != nil {
		return nil, err
	}
	return func(r record) bool {
		for k, v := range r.raw {
			if v != "" && p(v, r.low[k], r) {
				return true
			}
		}
		return false
	}, nil
}
