package yara

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Own reports whether a rule file is one of our own rules: directly in the
// rule folder (rules/yara/NAME.yar). Files in subfolders are imported
// public sets (yara/signature-base/...): our conventions (meta id,
// description, severity; samples; no libyara warnings) are warnings for
// them, and only what will not compile is an error.
func Own(s Source) bool { return !strings.Contains(s.Path, "/") }

// Lint compiles every rule file under dir (see RuleDir) on its own, so each
// broken file is reported, then all together (duplicate rule names), and
// checks the metadata tillwatch maps to alerts: a unique id, a description
// and a severity or score. For our own rules (Own) a missing one and a
// libyara warning (slow strings) are problems; for imported rules they are
// warnings ("warning: " in the reason). What will not compile is always a
// problem. The answer is nil when all is well.
func Lint(dir string) ([]Problem, error) {
	srcs, err := LoadPath(dir)
	if err != nil {
		return nil, err
	}
	var ps []Problem
	ids := map[string]string{}
	var shared []Source // earlier files declaring private/global rules
	for _, s := range srcs {
		r, err := Compile([]Source{s})
		if err != nil && strings.Contains(err.Error(), "undefined identifier") && len(shared) > 0 {
			// Public sets share helper rules across files (Yara-Rules'
			// 000_common_rules.yar): compile the file after them, as
			// the folder is compiled.
			r, err = Compile(append(slices.Clone(shared), s))
		}
		if sharedRule.Match(s.Text) {
			shared = append(shared, s)
		}
		if err != nil {
			ps = append(ps, asProblems(err, s.Name)...)
			continue
		}
		own := Own(s)
		for _, w := range r.Warnings() {
			if own {
				w.Reason = "libyara " + w.Reason + " (our rules compile without warnings)"
			}
			ps = append(ps, w)
		}
		for _, info := range r.Infos() {
			at := Problem{File: s.Name, Line: ruleLine(s.Text, info.Rule)}
			if at.Line == 0 {
				continue // a shared rule of another file
			}
			bad := func(f string, a ...any) {
				at.Reason = "rule " + info.Rule + ": " + fmt.Sprintf(f, a...)
				if !own {
					at.Reason = "warning: convention: " + at.Reason
				}
				ps = append(ps, at)
			}
			raw := rawKeys(s.Text, info.Rule)
			switch {
			case info.Meta.ID == "":
				bad("meta id is required (it becomes rule.id)")
			case ids[info.Meta.ID] != "":
				bad("meta id %s already used by %s", info.Meta.ID, ids[info.Meta.ID])
			default:
				ids[info.Meta.ID] = info.Rule
			}
			if info.Meta.Description == "" {
				bad("meta description is required (it becomes rule.description)")
			}
			if !raw["severity"] && !raw["score"] {
				bad("meta severity (1-100) is required (it becomes event.severity)")
			}
			switch info.Meta.Response {
			case "", "none", "kill", "suspend":
			default:
				bad("meta response %q: want kill, suspend or none", info.Meta.Response)
			}
		}
	}
	if len(ps) == 0 {
		if _, err := Compile(srcs); err != nil {
			ps = append(ps, asProblems(err, dir)...)
		}
	}
	return ps, nil
}

var sharedRule = regexp.MustCompile(`(?m)^\s*(?:private|global)\s+(?:(?:private|global)\s+)?rule\b`)

func asProblems(err error, file string) []Problem {
	var pe ProblemsError
	if errors.As(err, &pe) {
		return pe
	}
	return []Problem{{File: file, Reason: err.Error()}}
}

// ruleLine is the line declaring rule name in text (0 if not found).
func ruleLine(text []byte, name string) int {
	re := regexp.MustCompile(`(?m)^\s*(?:(?:private|global)\s+)*rule\s+` + regexp.QuoteMeta(name) + `\b`)
	loc := re.FindIndex(text)
	if loc == nil {
		return 0
	}
	return bytes.Count(text[:loc[0]], []byte("\n")) + 1
}

// rawKeys are the meta identifiers written in rule name (lower case), to
// tell a missing severity from the default.
func rawKeys(text []byte, name string) map[string]bool {
	out := map[string]bool{}
	start := ruleLine(text, name)
	if start == 0 {
		return out
	}
	lines := strings.Split(string(text), "\n")[start-1:]
	in := false
	keyRe := regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=`)
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case t == "meta:":
			in = true
		case in && (t == "strings:" || t == "condition:"):
			return out
		case in:
			if m := keyRe.FindStringSubmatch(l); m != nil {
				out[strings.ToLower(m[1])] = true
			}
		}
	}
	return out
}

// TestSamples runs every rule file's samples: for rules/yara/NAME.yar,
// each file under tests/NAME/positive must match a rule of NAME.yar and
// none under tests/NAME/negative may. Samples are scanned with their own
// file name, so rules using the externals are tested too. One of our own
// rule files (Own) without positive and negative samples is a problem;
// imported files run theirs when they have some.
func TestSamples(dir string) ([]Problem, error) {
	srcs, err := LoadPath(dir)
	if err != nil {
		return nil, err
	}
	root := RuleDir(dir)
	var ps []Problem
	var shared []Source
	for _, s := range srcs {
		stem := strings.TrimSuffix(filepath.Base(s.Path), filepath.Ext(s.Path))
		tdir := filepath.Join(root, filepath.Dir(s.Path), "tests", stem)
		isShared := sharedRule.Match(s.Text)
		if _, err := os.Stat(tdir); err != nil && !Own(s) {
			if isShared {
				shared = append(shared, s)
			}
			continue // imported, no samples: Lint compiled it
		}
		r, err := Compile(append(slices.Clone(shared), s))
		if isShared {
			shared = append(shared, s)
		}
		if err != nil {
			ps = append(ps, asProblems(err, s.Name)...)
			continue
		}
		for _, kind := range []string{"positive", "negative"} {
			samples, _ := filepath.Glob(filepath.Join(tdir, kind, "*"))
			sort.Strings(samples)
			if len(samples) == 0 && Own(s) {
				ps = append(ps, Problem{File: s.Name, Reason: fmt.Sprintf("no %s samples: add harmless files under %s", kind, filepath.Join(tdir, kind))})
			}
			for _, sp := range samples {
				ms, err := scanSample(r, sp)
				switch {
				case err != nil:
					ps = append(ps, Problem{File: sp, Reason: err.Error()})
				case kind == "positive" && len(ms) == 0:
					ps = append(ps, Problem{File: sp, Reason: "positive sample matches no rule of " + s.Name})
				case kind == "negative" && len(ms) > 0:
					ps = append(ps, Problem{File: sp, Reason: "negative sample matches rule " + ms[0].Rule})
				}
			}
		}
	}
	return ps, nil
}

func scanSample(r *Rules, p string) ([]Match, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	var own owners
	return r.ScanMem(b, FileExternals(p, b[:min(len(b), HeadSize)], own.name(fi)), DefaultTimeout)
}
