package sigma

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ruleFiles lists every rule file (*.yml, *.yaml) under dir, nested folders
// included (SigmaHQ's tree is rules/<os>/<category>/...), leaving out the
// samples folder dir/tests and hidden folders. A missing dir holds none.
func ruleFiles(fsys fs.FS, dir string) ([]string, error) {
	var out []string
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() {
			if p != dir && (p == path.Join(dir, "tests") || strings.HasPrefix(d.Name(), ".")) {
				return fs.SkipDir
			}
			return nil
		}
		if ext := path.Ext(p); (ext == ".yml" || ext == ".yaml") && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// own reports whether a rule file is one of our own rules (directly in the
// sigma folder), which must ship samples. Rules in subfolders are imported
// content (a SigmaHQ tree, `tillwatch rules import sigma`): samples are
// optional for them and run when present.
func own(dir, file string) bool { return path.Dir(file) == dir }

// LoadDir parses every rule file under dir of fsys. It returns the rules
// that parse (not-applicable ones included, with their reason) and every
// problem: an error drops that rule only. Ids must be unique.
func LoadDir(fsys fs.FS, dir string) ([]*Rule, []Problem) {
	files, err := ruleFiles(fsys, dir)
	if err != nil {
		return nil, []Problem{{File: dir, Level: LevelError, Reason: err.Error()}}
	}
	var out []*Rule
	var ps []Problem
	seen := map[string]string{}
	for _, f := range files {
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			ps = append(ps, Problem{File: f, Level: LevelError, Reason: err.Error()})
			continue
		}
		r, fps := parseRule(f, raw)
		ps = append(ps, fps...)
		if r == nil {
			continue
		}
		if prev, dup := seen[r.ID]; dup {
			ps = append(ps, Problem{File: f, Level: LevelError, Reason: fmt.Sprintf("rule id %s already defined in %s", r.ID, prev)})
			continue
		}
		seen[r.ID] = f
		out = append(out, r)
	}
	return out, ps
}

// Load is LoadDir for a tree that must be clean (the built-in rules): any
// error is returned, naming file and line.
func Load(fsys fs.FS, dir string) ([]*Rule, error) {
	rs, ps := LoadDir(fsys, dir)
	return rs, Errors(ps)
}

// Errors joins the error-level problems, nil if there are none.
func Errors(ps []Problem) error {
	var errs []error
	for _, p := range ps {
		if p.Level == LevelError {
			errs = append(errs, errors.New(p.String()))
		}
	}
	return errors.Join(errs...)
}

// LoadAll loads the built-in rules (dir of builtin) and then dir of every
// extra rule folder (dir absent there is fine), with ids unique across all
// of them. A rule with an error is left out and reported; nothing here
// stops the sensor. Problems name the file as on disk.
func LoadAll(builtin fs.FS, dir string, extra []string) ([]*Rule, []Problem) {
	all, ps := LoadDir(builtin, dir)
	seen := map[string]string{}
	for _, r := range all {
		seen[r.ID] = r.File
	}
	for _, root := range extra {
		more, mps := LoadDir(os.DirFS(root), dir)
		for _, p := range mps {
			p.File = filepath.Join(root, p.File)
			ps = append(ps, p)
		}
		for _, r := range more {
			r.File = filepath.Join(root, r.File)
			if prev, dup := seen[r.ID]; dup {
				ps = append(ps, Problem{File: r.File, Level: LevelError, Reason: fmt.Sprintf("rule id %s already defined in %s", r.ID, prev)})
				continue
			}
			seen[r.ID] = r.File
			all = append(all, r)
		}
	}
	return all, ps
}

// productOS maps logsource.product to the GOOS it describes.
var productOS = map[string]string{"linux": "linux", "windows": "windows", "macos": "darwin"}

// Skip says why r does not run on a host running goos, "" if it runs.
func (r *Rule) Skip(goos string) string {
	if r.NotApplicable != "" {
		return r.NotApplicable
	}
	if os, ok := productOS[r.Product]; ok && os != goos {
		return fmt.Sprintf("logsource product %s: not run on a %s sensor", r.Product, goos)
	}
	return ""
}

// Summary counts what a load did, for the sensor's start log, its health
// event and `rules lint`.
type Summary struct {
	Files         int // rule files read
	Run           int // rules the detector evaluates
	OtherOS       int // valid rules for another operating system
	NotApplicable int // valid rules for events or fields the sensor does not have
	Errors        int // rule files that are not valid (skipped)
	Warnings      int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d rule files: %d run, %d for another OS, %d not applicable, %d errors, %d warnings",
		s.Files, s.Run, s.OtherOS, s.NotApplicable, s.Errors, s.Warnings)
}

// Summarize counts rules and problems for a host running goos.
func Summarize(rs []*Rule, ps []Problem, goos string) Summary {
	var s Summary
	for _, r := range rs {
		switch {
		case r.NotApplicable != "":
			s.NotApplicable++
		case r.Skip(goos) != "":
			s.OtherOS++
		default:
			s.Run++
		}
	}
	errFiles := map[string]bool{}
	for _, p := range ps {
		switch p.Level {
		case LevelError:
			errFiles[p.File] = true
		case LevelWarning:
			s.Warnings++
		}
	}
	s.Errors = len(errFiles)
	s.Files = len(rs) + s.Errors
	return s
}

// LintDir checks every rule file under dir of fsys and returns errors
// (the rule will not load), warnings and, for valid rules that cannot run
// on tillwatch's events, one "skipped" line with the reason. Our own rules
// (directly in dir) must have at least one positive and one negative
// sample under dir/tests/<file stem>/{positive,negative}/*.json; imported
// rules (in subfolders) need none.
func LintDir(fsys fs.FS, dir string) []Problem {
	rs, ps := LoadDir(fsys, dir)
	for _, r := range rs {
		if r.NotApplicable != "" {
			ps = append(ps, Problem{File: r.File, Level: LevelSkipped, Reason: "not applicable: " + r.NotApplicable})
		}
	}
	files, _ := ruleFiles(fsys, dir)
	stems := map[string]bool{}
	for _, f := range files {
		stem := stemOf(f)
		stems[stem] = true
		if !own(dir, f) {
			continue
		}
		for _, kind := range []string{"positive", "negative"} {
			if len(samples(fsys, dir, stem, kind)) == 0 {
				ps = append(ps, Problem{File: f, Level: LevelError, Reason: fmt.Sprintf("no %s samples: add ECS event JSON files under %s/ beside the rule", kind, path.Join("tests", stem, kind))})
			}
		}
	}
	// Samples for a rule that is gone would never run again.
	if ents, err := fs.ReadDir(fsys, path.Join(dir, "tests")); err == nil {
		for _, e := range ents {
			if e.IsDir() && !stems[e.Name()] {
				ps = append(ps, Problem{File: path.Join(dir, "tests", e.Name()), Level: LevelError, Reason: "samples for a rule file that does not exist (" + e.Name() + ".yml)"})
			}
		}
	}
	return ps
}

// TestDir runs every rule's samples: each positive sample must match the
// rule, each negative sample must not. Samples go through the same
// category and field mapping as live events. Only errors are returned.
func TestDir(fsys fs.FS, dir string) []Problem {
	rs, all := LoadDir(fsys, dir)
	var ps []Problem
	for _, p := range all {
		if p.Level == LevelError {
			ps = append(ps, p)
		}
	}
	for _, r := range rs {
		stem := stemOf(r.File)
		for _, kind := range []string{"positive", "negative"} {
			for _, sp := range samples(fsys, dir, stem, kind) {
				if r.NotApplicable != "" {
					ps = append(ps, Problem{File: sp, Level: LevelError, Reason: fmt.Sprintf("rule %s is not applicable (%s); its samples cannot run", r.ID, r.NotApplicable)})
					continue
				}
				ev, err := readSample(fsys, sp)
				if err != nil {
					ps = append(ps, Problem{File: sp, Level: LevelError, Reason: err.Error()})
					continue
				}
				ok, err := r.Matches(&ev)
				switch {
				case err != nil:
					ps = append(ps, Problem{File: sp, Level: LevelError, Reason: err.Error()})
				case kind == "positive" && !ok:
					ps = append(ps, Problem{File: sp, Level: LevelError, Reason: fmt.Sprintf("positive sample does not match rule %s (%s)", r.ID, r.Title)})
				case kind == "negative" && ok:
					ps = append(ps, Problem{File: sp, Level: LevelError, Reason: fmt.Sprintf("negative sample matches rule %s (%s)", r.ID, r.Title)})
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
