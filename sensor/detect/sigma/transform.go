// Value transforms behind the modifiers: globs, windash variants, base64
// offsets, UTF-16 encodings and keyword searches.

package sigma

import (
	"encoding/base64"
	"encoding/binary"
	"regexp"
	"strings"
	"unicode/utf16"
)

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
