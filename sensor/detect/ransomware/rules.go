package ransomware

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Rules are the thresholds, weights and alert metadata of the ransomware
// detector: one YAML file (rules/ransomware/*.yaml), loaded strictly.
type Rules struct {
	// Window is how long a scored behaviour counts towards a tree's score.
	Window     time.Duration `yaml:"window"`
	AlertScore int           `yaml:"alert_score"`
	// RMMDescendantThresholdFactor scales AlertScore for a tree that is, or
	// descends from, a catalogued RMM agent (approved or not): 0.5 stops
	// such a tree at half the score. Absent (0) means 1: no change.
	RMMDescendantThresholdFactor float64 `yaml:"rmm_descendant_threshold_factor"`
	// EntropyHigh (bits/byte over the sample) marks content as encrypted
	// when its format is unknown; EntropyLow marks content as plain.
	EntropyHigh float64 `yaml:"entropy_high"`
	EntropyLow  float64 `yaml:"entropy_low"`
	// MinSample: shorter samples carry no entropy signal.
	MinSample int     `yaml:"min_sample"`
	Weights   Weights `yaml:"weights"`
	Note      Note    `yaml:"note"`
	Breadth   Breadth `yaml:"breadth"`
	// KnownExtensions are extensions a rename to which is not suspicious.
	KnownExtensions []string `yaml:"known_extensions"`
	// Spawners are system programs (base names; a version suffix such as
	// python3.11 matches python) that start a program per file: shells,
	// xargs, find, interpreters. Families are found by behaviour whatever
	// the ancestor's name (FamilyRoot); this list only keeps these programs
	// out of the encryptor quarantine.
	Spawners  []string `yaml:"spawners"`
	Behaviour Meta     `yaml:"behaviour"`
	Canary    Meta     `yaml:"canary"`
	Tests     []Case   `yaml:"tests"`

	known map[string]bool
}

// Weights score each behaviour.
type Weights struct {
	TypeDestroyed int `yaml:"type_destroyed"` // a known format rewritten as high-entropy unknown content
	Replaced      int `yaml:"replaced"`       // an original the family read, replaced by an encrypted copy (rename, link or write-beside-then-delete)
	// ReplacedUnread is the same replacement when no process of the family
	// read the original first: one such file stays below alert_score.
	ReplacedUnread int `yaml:"replaced_unread"`
	Rename         int `yaml:"rename"`  // a file renamed to an unknown extension appended to its name
	Note           int `yaml:"note"`    // the same ransom-note name written in many folders
	Breadth        int `yaml:"breadth"` // writes in many folders per second
	Canary         int `yaml:"canary"`  // a decoy written, renamed or deleted
}

// Note configures ransom-note detection.
type Note struct {
	MinDirs  int      `yaml:"min_dirs"`
	Keywords []string `yaml:"keywords"`
}

// Breadth configures the folders-per-interval signal.
type Breadth struct {
	Dirs int           `yaml:"dirs"`
	Per  time.Duration `yaml:"per"`
}

// Meta is what an alert says about itself.
type Meta struct {
	ID          string            `yaml:"id"`
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Severity    int               `yaml:"severity"`
	Technique   []alert.Technique `yaml:"technique"`
}

// Case is a rule test: observations and whether they must alert.
type Case struct {
	Name  string    `yaml:"name"`
	Alert bool      `yaml:"alert"`
	Obs   []CaseObs `yaml:"obs"`
}

// CaseObs is an observation in a rule test. Before/After give the magic
// and entropy of the content ("pdf/4.1", "/7.9" for unknown).
type CaseObs struct {
	PID int `yaml:"pid"`
	// Tree is the tree the process belongs to (workers forked by one
	// encryptor); 0 means its own pid.
	Tree   int    `yaml:"tree"`
	Op     string `yaml:"op"`
	Path   string `yaml:"path"`
	Old    string `yaml:"old"`
	Before string `yaml:"before"`
	After  string `yaml:"after"`
	Canary bool   `yaml:"canary"`
	AtMS   int    `yaml:"at_ms"`
	// Spawner is the pid of the spawner (named "sh") that started the
	// tree; 0 for none.
	Spawner int `yaml:"spawner"`
	// Family lists further ancestors above the spawner (named "sh"),
	// nearest first: xargs above a per-file `sh -c`.
	Family []int `yaml:"family"`
	// RMM names the catalogued product of the RMM agent the tree descends
	// from (the agent is pid 1000 named "<product>-agent"); "" for none.
	RMM string `yaml:"rmm"`
}

// Validate reports every problem at once.
func (r *Rules) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if r.Window < time.Second {
		bad("window %s: want at least 1s", r.Window)
	}
	if r.AlertScore < 1 {
		bad("alert_score %d: want at least 1", r.AlertScore)
	}
	if f := r.RMMDescendantThresholdFactor; f < 0 || f > 1 || f != f {
		bad("rmm_descendant_threshold_factor %g: want 0 < factor <= 1 (absent: 1)", f)
	}
	if r.EntropyHigh <= r.EntropyLow || r.EntropyHigh > 8 || r.EntropyLow < 0 {
		bad("entropy_low %.2f / entropy_high %.2f: want 0 <= low < high <= 8", r.EntropyLow, r.EntropyHigh)
	}
	if r.MinSample < 16 || r.MinSample > SampleSize {
		bad("min_sample %d: want 16-%d", r.MinSample, SampleSize)
	}
	if w := r.Weights.ReplacedUnread; w < 0 || w >= r.Threshold(true) {
		bad("weights.replaced_unread %d: want 0 <= weight < the lowest stop threshold %d (one file replaced by a process that never read it must not stop anything alone)", w, r.Threshold(true))
	}
	if r.Note.MinDirs < 2 {
		bad("note.min_dirs %d: want at least 2", r.Note.MinDirs)
	}
	for _, sp := range r.Spawners {
		if sp == "" || strings.ContainsAny(sp, "/ \t") {
			bad("spawners: %q: want an executable base name", sp)
		}
	}
	if r.Breadth.Dirs < 2 || r.Breadth.Per <= 0 {
		bad("breadth: dirs %d per %s: want dirs >= 2 and a positive interval", r.Breadth.Dirs, r.Breadth.Per)
	}
	for name, m := range map[string]Meta{"behaviour": r.Behaviour, "canary": r.Canary} {
		if m.ID == "" || m.Name == "" || m.Severity < 1 || m.Severity > 100 || len(m.Technique) == 0 {
			bad("%s: id, name, severity 1-100 and a technique are required", name)
		}
	}
	return errors.Join(errs...)
}

// LoadRules reads the one *.yaml file under dir of fsys (a later folder
// given with --rules replaces the built-in thresholds), validates it and
// runs its test cases.
func LoadRules(fsys fs.FS, dir string) (*Rules, error) {
	files, err := fs.Glob(fsys, path.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) != 1 {
		return nil, fmt.Errorf("%s: want exactly one thresholds file, found %d", dir, len(files))
	}
	raw, err := fs.ReadFile(fsys, files[0])
	if err != nil {
		return nil, err
	}
	var r Rules
	if err := cfgfile.Decode(files[0], raw, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", files[0], err)
	}
	r.known = map[string]bool{}
	for _, e := range r.KnownExtensions {
		r.known[strings.ToLower(strings.TrimPrefix(e, "."))] = true
	}
	if err := r.RunTests(); err != nil {
		return nil, fmt.Errorf("%s: %w", files[0], err)
	}
	return &r, nil
}

// IsSpawner reports whether an executable's base name is one of the
// rules' spawners, ignoring a version suffix (python3.11, perl5.36).
func (r *Rules) IsSpawner(base string) bool {
	for _, sp := range r.Spawners {
		if rest, ok := strings.CutPrefix(base, sp); ok && strings.Trim(rest, "0123456789.") == "" {
			return true
		}
	}
	return false
}

// RunTests replays every test case through a fresh scorer.
func (r *Rules) RunTests() error {
	var errs []error
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range r.Tests {
		s := NewScorer(r)
		alerted := false
		for _, o := range c.Obs {
			ob := Obs{Time: t0.Add(time.Duration(o.AtMS) * time.Millisecond), Tree: cmp.Or(o.Tree, o.PID), PID: o.PID, Op: o.Op, Path: o.Path, OldPath: o.Old, Canary: o.Canary}
			if o.Spawner > 0 {
				ob.Ancestors = append(ob.Ancestors, Spawner{PID: o.Spawner, Name: "sh"})
			}
			for _, p := range o.Family {
				ob.Ancestors = append(ob.Ancestors, Spawner{PID: p, Name: "sh"})
			}
			if o.RMM != "" {
				ob.RMM = &RMMAgent{Product: o.RMM, Name: o.RMM + "-agent", PID: 1000}
			}
			var err error
			if ob.Before, err = caseFeatures(o.Before); err == nil {
				ob.After, err = caseFeatures(o.After)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("test %q: %w", c.Name, err))
				break
			}
			if _, ok := s.Observe(ob); ok {
				alerted = true
			}
		}
		if alerted != c.Alert {
			errs = append(errs, fmt.Errorf("test %q: alert = %v, want %v", c.Name, alerted, c.Alert))
		}
	}
	return errors.Join(errs...)
}

// caseFeatures parses "magic/entropy" ("" = none).
func caseFeatures(s string) (*Features, error) {
	if s == "" {
		return nil, nil
	}
	magic, ent, ok := strings.Cut(s, "/")
	var e float64
	if _, err := fmt.Sscanf(ent, "%g", &e); !ok || err != nil {
		return nil, fmt.Errorf("features %q: want magic/entropy", s)
	}
	return &Features{Magic: magic, Entropy: e, Sampled: SampleSize, Size: SampleSize}, nil
}
