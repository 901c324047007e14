// Long (about 700 lines) on purpose: the Scorer is one state machine over
// per-tree records (Observe -> apply -> verdict), and every signal that
// feeds the score (destroyed formats, replacements, renames, notes,
// breadth, families) reads and updates the same records under the same
// lock; kept in one file so a weight's whole effect reads in one place.

package ransomware

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"
)

// Observation ops.
const (
	OpWrite  = "write"  // a completed write (close-write)
	OpCreate = "create" // a new file
	OpDelete = "delete"
	OpRename = "rename"
	OpOpen   = "open" // an open with intent to write (only canaries score it)
	// OpRead is an open whose content was sampled (After): it scores
	// nothing, but records what the file held and which family read it, so
	// that a later rename, link or delete over it is judged against it.
	OpRead = "read"
)

// Obs is one file observation attributed to a process tree.
type Obs struct {
	Time time.Time
	// Tree is the key behaviour is aggregated on: the root of the process
	// tree (workers forked by one encryptor count together).
	Tree    int
	PID     int
	Op      string
	Path    string
	OldPath string
	// Before is the content before the tree opened the file (nil for a new
	// file or when unknown); After is the content after the write.
	Before, After *Features
	// Canary marks a decoy file planted by the sensor.
	Canary bool
	// RMM is the RMM agent the tree is or descends from (nil: none). The
	// first observation of a tree that carries it marks the tree: its stop
	// threshold is scaled by the rules' rmm_descendant_threshold_factor.
	RMM *RMMAgent
	// Ancestors are the tree root's ancestors, nearest first (bounded,
	// never pid 1 or the sensor's own line): a loop that starts a program
	// per file is many one-file trees, and the ancestor that spawned them
	// (the family root: FamilyRoot) scores them together, whatever its name.
	Ancestors []Spawner
	// Unsampled marks a write whose file could not be sampled before it
	// (the file source asks for no permission event per open:
	// files.open_permission unless-kernel). Before is then nil for every
	// write, and a file the tree did not create is judged by what its name
	// says it holds (claimedByName).
	Unsampled bool
}

// Spawner is an ancestor that may start a program per file: a shell,
// xargs, find, an interpreter, a service manager, a custom launcher.
type Spawner struct {
	PID  int
	Name string // executable base name
}

// RMMAgent is the catalogued remote-management agent a process tree is or
// descends from (sensor/detect/rmm finds it; the file guard caches it per
// tree).
type RMMAgent struct {
	Product     string // catalog id, e.g. "kaseya-vsa"
	ProductName string // display name
	Name        string // the agent's process name
	Executable  string
	PID         int
	Approved    bool // named in the sensor's rmm.approved
}

// Verdict is a tree's score when it crossed the alert threshold.
type Verdict struct {
	Tree    int
	Score   int
	Reasons []string
	Files   []string // affected files, first first (bounded)
	Total   int      // number of affected files
	Canary  bool
	// RMM is set when the tree descends from an RMM agent; Threshold is the
	// score the tree was stopped at (AlertScore, or lowered for RMM).
	RMM       *RMMAgent
	Threshold int
	// Spawner is set when the verdict is a family's: Tree is then the
	// family root's pid (the ancestor that spawned the one-file workers),
	// and stopping its tree stops the loop.
	Spawner *Spawner
	// Workers is how many of the family root's worker trees changed files
	// suspiciously within the window (0 for a tree's own verdict).
	Workers int
}

// Scorer keeps per-tree behaviour within the rules' window. It is not safe
// for concurrent use; the guard serialises calls.
type Scorer struct {
	r      *Rules
	trees  map[int]*tree
	groups map[int]*tree // family groups, by the ancestor's pid
	// records remember what each recently seen file held and who read it:
	// a rename, link or delete over a file is judged against the content
	// that was there. Bounded (maxRecords); losing one only weakens one
	// observation.
	records map[string]record
}

// record is what the scorer last knew of a path's content.
type record struct {
	f Features
	// reader and readerParent are the tree (and the tree root's parent)
	// that last opened the file; readAt when.
	reader, readerParent int
	readAt               time.Time
	// writer is the tree that wrote the content (0: found there); wrote when.
	writer int
	wrote  time.Time
}

type scored struct {
	at     time.Time
	weight int
	reason string
}

type tree struct {
	last    time.Time
	scores  []scored
	files   []string
	seen    map[string]bool
	total   int
	created map[string]time.Time // encrypted-looking new files: path -> when
	made    map[string]time.Time // files the tree created (create events): path -> when
	// gone holds the originals the tree deleted with no encrypted copy
	// beside them yet: the copy's close-write (content group) may be read
	// after the delete (name group), and still pairs with it.
	gone  map[string]goneFile
	notes map[string]map[string]bool
	noted bool
	dirs  map[string]time.Time
	// dirsLive is how many of dirs were within the breadth period when
	// last counted.
	dirsLive int
	broad    time.Time
	canary   bool
	alerted  bool
	rmm      *RMMAgent
	reasons  map[string]int
	contrib  map[int]time.Time // family groups: worker trees that behaved suspiciously, when last
	// opened is the last file each process of the tree opened for writing
	// (or created), and when: a second file, beyond the one it already
	// damaged, is what lets a tree's score reach the threshold (see
	// verdict). Kept per process, so that the temporary a worker renames
	// over its file is not taken for a second file, while a file another
	// worker of the tree opened still is.
	opened map[int]openedFile
}

// goneFile is an original a tree deleted, waiting for its encrypted copy:
// what the pair would weigh, judged at the delete.
type goneFile struct {
	at     time.Time
	read   bool // the family read it first: any new file beside it is its copy
	weight int
	how    string
}

// openedFile is a file a process opened for writing, and when.
type openedFile struct {
	path string
	at   time.Time
}

// maxOpened bounds a tree's opened files (one per process).
const maxOpened = 64

// maxTrees and maxFiles bound the scorer's memory under a storm.
const (
	maxTrees   = 4096
	maxFiles   = 256
	maxRecords = 16384
)

// NewScorer returns an empty scorer for r.
func NewScorer(r *Rules) *Scorer {
	return &Scorer{r: r, trees: map[int]*tree{}, groups: map[int]*tree{}, records: map[string]record{}}
}

// Observe scores o. It returns a verdict the first time a score reaches
// the alert threshold within the window: the tree's own, or its family's
// when the tree is one of the workers of an ancestor that spawned several
// suspicious ones (FamilyRoot). The family's verdict (Tree = the family
// root's pid, Spawner set) wins when both cross at once, since stopping the
// family root stops the tree too.
func (s *Scorer) Observe(o Obs) (Verdict, bool) {
	if o.Op == OpRead {
		s.read(o)
		return Verdict{}, false
	}
	t := s.tree(o.Tree, o.Time)
	suspicious := s.apply(t, o)
	v, ok := s.verdict(t, o.Tree, o.Time)
	if len(o.Ancestors) == 0 {
		s.remember(o)
		return v, ok
	}
	// Every ancestor's group scores the observation; the worker it counts
	// for is the ancestor's child on the way down to this tree.
	workers := make([]int, len(o.Ancestors))
	for i, a := range o.Ancestors {
		worker := o.Tree
		if i > 0 {
			worker = o.Ancestors[i-1].PID
		}
		g := s.treeIn(s.groups, a.PID, o.Time)
		// A worker opening a file for writing joins a family that already
		// has another suspicious worker: the next `dd of=F` of a wiper
		// loop is stopped at its open, not after its write.
		if s.apply(g, o) || suspicious || o.Op == OpOpen && !o.Canary && otherWorker(g, worker) {
			if len(g.contrib) >= maxTrees {
				clear(g.contrib)
			}
			g.contrib[worker] = o.Time
		}
		for k, at := range g.contrib {
			if o.Time.Sub(at) > s.r.Window {
				delete(g.contrib, k)
			}
		}
		workers[i] = len(g.contrib)
	}
	s.remember(o)
	i := FamilyRoot(workers)
	if i < 0 {
		return v, ok
	}
	root := o.Ancestors[i]
	gv, gok := s.verdict(s.groups[root.PID], root.PID, o.Time)
	if !gok {
		return v, ok
	}
	gv.Spawner = &root
	gv.Workers = workers[i]
	gv.Reasons = append(gv.Reasons, fmt.Sprintf("family root %s (pid %d): %d of the processes it started changed files suspiciously in the window; it is stopped with everything it started",
		root.Name, root.PID, workers[i]))
	return gv, true
}

// FamilyOf returns the index in ancestors (tree's ancestors, nearest
// first, as in Obs) of the family root tree would be stopped with if it
// now did something suspicious, or -1: the decision Observe makes
// (FamilyRoot), on the workers each ancestor counts within the window
// plus tree's own. It changes nothing. A kernel tripwire that confirmed a
// decoy hit by a process the guard never saw act uses it to end the same
// family the guard would have.
func (s *Scorer) FamilyOf(tree int, ancestors []Spawner, now time.Time) int {
	workers := make([]int, len(ancestors))
	for i, a := range ancestors {
		worker := tree
		if i > 0 {
			worker = ancestors[i-1].PID
		}
		n, counted := 0, false
		if g, ok := s.groups[a.PID]; ok {
			for k, at := range g.contrib {
				if now.Sub(at) <= s.r.Window {
					n++
					counted = counted || k == worker
				}
			}
		}
		if !counted {
			n++
		}
		workers[i] = n
	}
	return FamilyRoot(workers)
}

// claimDestroyed judges a write the guard could not sample before it
// (Obs.Unsampled): a file the tree did not create, whose name says it
// holds a known format or text, now holds encrypted-looking unknown
// bytes. Without a permission event per open an in-place encryption of a
// file nobody read first otherwise looks like "an encrypted-looking new
// file", which alone stops nothing: an encryptor reaching the decoys last
// (largest file first) lost 683 of 1,008 files that way. Known tools
// write their own formats (gzip, zip, SQLite), which are recognised and
// never count; a file the tree created is new, not destroyed.
func (s *Scorer) claimDestroyed(t *tree, o Obs) (string, bool) {
	if !o.Unsampled || o.After == nil || !s.encrypted(o.After) {
		return "", false
	}
	claim, ok := claimedByName[strings.ToLower(filepath.Ext(o.Path))]
	if !ok {
		return "", false
	}
	if at, ok := t.made[o.Path]; ok && o.Time.Sub(at) <= s.r.Window {
		return "", false
	}
	if rec, ok := s.records[o.Path]; ok && rec.writer == o.Tree && o.Time.Sub(rec.wrote) <= s.r.Window {
		return "", false // the tree's own earlier content
	}
	return claim, true
}

// claimedByName maps a file name's extension to what such a file holds.
var claimedByName = map[string]string{
	".pdf": "pdf", ".docx": "zip", ".xlsx": "zip", ".pptx": "zip", ".odt": "zip", ".ods": "zip", ".zip": "zip",
	".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
	".doc": "ole2", ".xls": "ole2", ".rtf": "rtf", ".db": "sqlite", ".sqlite": "sqlite",
	".csv": "text", ".txt": "text", ".log": "text", ".md": "text", ".json": "text", ".xml": "text", ".html": "text",
	".c": "text", ".h": "text", ".go": "text", ".py": "text", ".sh": "text", ".yaml": "text", ".yml": "text", ".ini": "text",
}

// otherWorker reports whether g already counts a worker other than w.
func otherWorker(g *tree, w int) bool {
	for k := range g.contrib {
		if k != w {
			return true
		}
	}
	return false
}

// MinFamilyWorkers is how many suspicious worker trees an ancestor needs to
// be a family root. Two, not one: an encryptor started from an operator's
// login shell is stopped alone, the shell and its other children are left.
const MinFamilyWorkers = 2

// FamilyRoot is the family-root decision, shared with any other counter of
// file bursts (a kernel burst threshold should count the same families).
// workers[i] is how many distinct worker trees below the i-th ancestor of a
// tree (nearest first) behaved suspiciously within the window, each counted
// by the ancestor's child on the way down. The family root is the highest
// ancestor of the run of qualifying ancestors (at least MinFamilyWorkers)
// that starts at most maxWrapperLevels above the tree: for
// `xargs -P4 sh -c 'openssl … && mv …'` each per-file `sh` may hold one or
// two workers, xargs holds many and the login shell above holds one (xargs),
// so xargs is the root. It returns -1 when no ancestor qualifies there: the
// tree is scored alone (an encryptor started from a login shell is stopped
// without the shell).
func FamilyRoot(workers []int) int {
	root := -1
	for i, n := range workers {
		if n < MinFamilyWorkers {
			if root >= 0 || i >= maxWrapperLevels {
				break
			}
			continue
		}
		root = i
	}
	return root
}

// maxWrapperLevels is how many single-worker ancestors (a per-file
// `sh -c`, `timeout`, `nice`) may sit between a worker and its family root.
const maxWrapperLevels = 2

// apply scores o into t and reports whether o was suspicious: it added
// weight or wrote an encrypted-looking new file (the first half of an
// encrypt-to-copy-then-rm loop, whose rm is another tree).
func (s *Scorer) apply(t *tree, o Obs) bool {
	n := len(t.scores)
	suspicious := false
	t.last = o.Time
	if t.rmm == nil && o.RMM != nil {
		t.rmm = o.RMM
	}
	r := s.r
	switch o.Op {
	case OpWrite, OpCreate:
		dir := filepath.Dir(o.Path)
		if o.Op == OpCreate && o.After == nil {
			// A create event (no content yet): the file is new.
			if len(t.made) >= maxTrees {
				clear(t.made)
			}
			t.made[o.Path] = o.Time
		}
		if o.Canary && o.Op == OpWrite {
			s.add(t, o, r.Weights.Canary, "decoy file written: "+o.Path, true)
			break
		}
		if orig, ok := s.contentReplaced(o); ok {
			w, how := s.replaceWeight(o, orig, true)
			s.add(t, o, w, fmt.Sprintf("file replaced (%s -> %s)%s", name(&orig.f), describe(o.After, r.EntropyHigh), how), true)
			t.created[o.Path] = o.Time
		} else if o.Op == OpWrite && s.destroyed(o.Before, o.After) {
			s.add(t, o, r.Weights.TypeDestroyed, fmt.Sprintf("content type destroyed (%s -> %s)", name(o.Before), describe(o.After, r.EntropyHigh)), true)
		} else if claim, ok := s.claimDestroyed(t, o); ok {
			s.add(t, o, r.Weights.TypeDestroyed, fmt.Sprintf("content type destroyed (%s by its name -> %s; not sampled before the write)", claim, describe(o.After, r.EntropyHigh)), true)
		} else if o.Before == nil && s.encrypted(o.After) {
			t.created[o.Path] = o.Time
			suspicious = true
			s.pairGone(t, o)
		}
		s.note(t, o, dir)
		s.breadth(t, o, dir)
	case OpDelete:
		if o.Canary {
			s.add(t, o, r.Weights.Canary, "decoy file deleted: "+o.Path, true)
			break
		}
		read, original := s.original(t, o)
		if !original {
			break
		}
		rec, ok := s.records[o.Path]
		w, how := s.replaceWeight(o, rec, ok)
		if s.copyBeside(t, o.Path, read) {
			s.add(t, o, w, "original deleted after an encrypted copy was written beside it"+how, true)
			break
		}
		if len(t.gone) >= maxTrees {
			clear(t.gone)
		}
		t.gone[o.Path] = goneFile{at: o.Time, read: read, weight: w, how: how}
	case OpRename:
		if o.Canary {
			s.add(t, o, r.Weights.Canary, fmt.Sprintf("decoy file renamed or replaced by rename: %s -> %s", o.OldPath, o.Path), true)
			break
		}
		if before, after, ok := s.renamedOver(o); ok {
			rec, known := s.records[o.Path]
			w, how := s.replaceWeight(o, rec, known)
			s.add(t, o, w, fmt.Sprintf("file replaced by rename (%s -> %s)%s", name(before), describe(after, r.EntropyHigh), how), true)
			t.created[o.Path] = o.Time
		} else if s.suspiciousRename(o.OldPath, o.Path) {
			s.add(t, o, r.Weights.Rename, "renamed to an unknown extension: "+filepath.Ext(o.Path), true)
		}
		if at, ok := t.created[o.OldPath]; ok {
			t.created[o.Path] = at
		}
	case OpOpen:
		if o.Canary {
			s.add(t, o, r.Weights.Canary, "decoy file opened for writing: "+o.Path, true)
			break
		}
		if _, ok := t.opened[o.PID]; !ok && len(t.opened) >= maxOpened {
			clear(t.opened)
		}
		t.opened[o.PID] = openedFile{path: o.Path, at: o.Time}
	}
	return suspicious || len(t.scores) > n
}

// Suspect reports whether tree changed file content suspiciously within
// the window: it wrote an encrypted-looking new file (the first half of a
// write-new-then-delete), or scored at least one replacement's weight. Its
// next files are then worth judging in order. Breadth alone (an
// extraction writes in many folders) does not make a tree suspect.
func (s *Scorer) Suspect(tree int, now time.Time) bool {
	t := s.trees[tree]
	if t == nil {
		return false
	}
	if s.score(t, now) >= s.r.Weights.ReplacedUnread {
		return true
	}
	for _, at := range t.created {
		if now.Sub(at) <= s.r.Window {
			return true
		}
	}
	return false
}

// verdict returns t's verdict the first time its score reaches the
// threshold within the window.
func (s *Scorer) verdict(t *tree, key int, now time.Time) (Verdict, bool) {
	r := s.r
	score := s.score(t, now)
	threshold := s.Threshold(t.rmm != nil)
	// A single file never reaches the threshold on its own unless it is a
	// decoy: shred of one file, a one-file conversion, an atomic save that
	// looks like a replacement are single acts. The score counts in full
	// once a second file is involved: damaged too, or opened for writing
	// (or created) after the first was damaged, so the encryptor is still
	// stopped at its second file's open, before writing it.
	if !t.canary && s.involved(t, now) < 2 {
		score = min(score, threshold-1)
	}
	if score < threshold || t.alerted {
		return Verdict{}, false
	}
	t.alerted = true
	v := Verdict{Tree: key, Score: score, Files: append([]string(nil), t.files...), Total: t.total, Canary: t.canary, Threshold: threshold}
	for _, sc := range t.scores {
		if !containsStr(v.Reasons, sc.reason) && len(v.Reasons) < 8 {
			v.Reasons = append(v.Reasons, sc.reason)
		}
	}
	if t.rmm != nil {
		a := *t.rmm
		v.RMM = &a
		approved := "unapproved"
		if a.Approved {
			approved = "approved"
		}
		v.Reasons = append(v.Reasons, fmt.Sprintf("process tree descends from RMM agent %s (%s, %s, pid %d): stop threshold lowered to %d (alert_score %d x %g)",
			a.Name, a.Product, approved, a.PID, threshold, r.AlertScore, s.factor()))
	}
	return v, true
}

// involved is how many distinct files the tree damaged, plus one when one
// of its processes opened another file for writing within the window.
func (s *Scorer) involved(t *tree, now time.Time) int {
	n := t.total
	if len(t.seen) >= maxFiles {
		return n
	}
	for _, f := range t.opened {
		if !t.seen[f.path] && now.Sub(f.at) <= s.r.Window {
			return n + 1
		}
	}
	return n
}

// Threshold is the score at which a tree is reported and stopped: the
// rules' alert_score, scaled by rmm_descendant_threshold_factor for a tree
// that descends from an RMM agent (rounded up, at least 1).
func (s *Scorer) Threshold(rmm bool) int { return s.r.Threshold(rmm) }

func (s *Scorer) factor() float64 { return s.r.factor() }

// Threshold is the stop threshold of a tree (see Scorer.Threshold).
func (r *Rules) Threshold(rmm bool) int {
	if !rmm {
		return r.AlertScore
	}
	return max(1, int(math.Ceil(float64(r.AlertScore)*r.factor())))
}

func (r *Rules) factor() float64 {
	if f := r.RMMDescendantThresholdFactor; f > 0 {
		return f
	}
	return 1
}

// Forget drops a tree's state (after it was stopped and killed); for a
// spawner group's verdict, the group's.
func (s *Scorer) Forget(v Verdict) {
	if v.Spawner != nil {
		delete(s.groups, v.Tree)
		return
	}
	delete(s.trees, v.Tree)
}

// Score returns the tree's current score.
func (s *Scorer) Score(treeKey int, now time.Time) int {
	t, ok := s.trees[treeKey]
	if !ok {
		return 0
	}
	return s.score(t, now)
}

// GroupScore returns the current score of the family group of the
// ancestor with pid (the workers it spawned, counted together).
func (s *Scorer) GroupScore(pid int, now time.Time) int {
	t, ok := s.groups[pid]
	if !ok {
		return 0
	}
	return s.score(t, now)
}

func (s *Scorer) tree(key int, now time.Time) *tree { return s.treeIn(s.trees, key, now) }

func (s *Scorer) treeIn(trees map[int]*tree, key int, now time.Time) *tree {
	if t, ok := trees[key]; ok {
		return t
	}
	if len(trees) >= maxTrees {
		// Drop idle trees first; a tree with a live score stays.
		for k, t := range trees {
			if now.Sub(t.last) > s.r.Window {
				delete(trees, k)
			}
		}
		if len(trees) >= maxTrees {
			clear(trees)
		}
	}
	t := &tree{seen: map[string]bool{}, created: map[string]time.Time{}, made: map[string]time.Time{}, gone: map[string]goneFile{}, notes: map[string]map[string]bool{}, dirs: map[string]time.Time{}, reasons: map[string]int{}, contrib: map[int]time.Time{}, opened: map[int]openedFile{}}
	trees[key] = t
	return t
}

func (s *Scorer) add(t *tree, o Obs, w int, reason string, affected bool) {
	if w <= 0 {
		return
	}
	t.scores = append(t.scores, scored{at: o.Time, weight: w, reason: reason})
	if o.Canary {
		t.canary = true
	}
	p := o.Path
	if o.Op == OpRename && o.OldPath != "" {
		p = o.OldPath
	}
	if affected && !t.seen[p] {
		// The file the damaging process itself last opened for writing
		// was part of this act (the temporary it wrote and renamed over
		// the original, whatever its name), not a second file.
		delete(t.opened, o.PID)
		t.total++
		if len(t.files) < maxFiles {
			t.seen[p] = true
			t.files = append(t.files, p)
		}
	}
}

func (s *Scorer) score(t *tree, now time.Time) int {
	keep := t.scores[:0]
	sum := 0
	for _, sc := range t.scores {
		if now.Sub(sc.at) <= s.r.Window {
			keep = append(keep, sc)
			sum += sc.weight
		}
	}
	t.scores = keep
	for p, at := range t.created {
		if now.Sub(at) > s.r.Window {
			delete(t.created, p)
		}
	}
	return sum
}

// encrypted reports whether content looks encrypted: no known format and
// high entropy over a sample long enough to say so.
func (s *Scorer) encrypted(f *Features) bool {
	return f != nil && f.Sampled >= s.r.MinSample && f.Magic == "" && f.Entropy >= s.r.EntropyHigh
}

// destroyed: the file had a known format (or plain content) before the
// tree wrote it and now holds encrypted-looking content. A format written
// by a known tool (gzip, zip, SQLite) is recognised and never counts.
//
// Partial encryption is the second case: LockFile encrypts every other 16
// bytes, which leaves too much plaintext for the sample to reach
// entropy_high. A file whose format (text included) is gone, replaced by
// unknown binary content at least entropy_low and clearly more random than
// before, was scrambled all the same; no tool rewrites a CSV or a PDF in
// place into bytes of no format.
func (s *Scorer) destroyed(before, after *Features) bool {
	if before == nil || after == nil || before.Sampled < s.r.MinSample || after.Sampled < s.r.MinSample {
		return false
	}
	if s.encrypted(after) {
		return before.Magic != "" || before.Entropy < s.r.EntropyLow
	}
	return before.Magic != "" && after.Magic == "" && after.Entropy >= s.r.EntropyLow &&
		after.Entropy >= before.Entropy+scrambledGain
}

// scrambledGain is how much more random (bits per byte) content must have
// become for a lost format to count as scrambled rather than rewritten.
const scrambledGain = 0.5

// replaced: the deleted file is an original (not content the tree wrote
// itself within the window: a temporary, such as the object git writes,
// links into place and unlinks) that held something of value (a format or
// text, not random bytes already: a package extraction replacing its own
// data blobs destroys nothing), and has an encrypted-looking sibling the
// tree wrote in the same folder within the window: write-new-then-delete,
// and link-over (unlink the original, link the encrypted copy in its
// place). The sibling must carry the original's name (F.enc, F.t) unless
// the family read the original first: a tool that unlinks and re-extracts
// files beside unrelated compressed ones (tar, dpkg) does neither.
func (s *Scorer) replaced(t *tree, o Obs) bool {
	read, ok := s.original(t, o)
	return ok && s.copyBeside(t, o.Path, read)
}

// original: the file o deleted could be an original an encryptor replaced
// (not the tree's own recent output, not already high-entropy content);
// read reports that o's family read it first.
func (s *Scorer) original(t *tree, o Obs) (read, ok bool) {
	if _, own := t.created[o.Path]; own {
		return false, false
	}
	rec, known := s.records[o.Path]
	if known && rec.writer == o.Tree && o.Time.Sub(rec.wrote) <= s.r.Window {
		return false, false
	}
	if known && rec.f.Sampled >= s.r.MinSample && rec.f.Magic == "" && rec.f.Entropy >= s.r.EntropyLow {
		return false, false
	}
	return known && rec.reader != 0 && o.Time.Sub(rec.readAt) <= s.r.Window && s.sameFamily(rec, o), true
}

// copyBeside: t wrote an encrypted-looking new file beside the original
// at path (any file in its folder when the family read the original
// first, else one whose name starts with the original's: F.csv.locked).
func (s *Scorer) copyBeside(t *tree, path string, read bool) bool {
	for p := range t.created {
		if isCopyOf(p, path, read) {
			return true
		}
	}
	return false
}

func isCopyOf(copyPath, original string, read bool) bool {
	return copyPath != original && filepath.Dir(copyPath) == filepath.Dir(original) &&
		(read || strings.HasPrefix(filepath.Base(copyPath), filepath.Base(original)))
}

// pairGone scores the originals t deleted before the encrypted copy o was
// read (the delete and the copy's write reach the sensor by two fanotify
// groups, in either order), as the delete would have been scored had the
// copy come first.
func (s *Scorer) pairGone(t *tree, o Obs) {
	for p, g := range t.gone {
		if o.Time.Sub(g.at) > s.r.Window {
			delete(t.gone, p)
			continue
		}
		if !isCopyOf(o.Path, p, g.read) {
			continue
		}
		delete(t.gone, p)
		orig := o
		orig.Op, orig.Path, orig.OldPath, orig.Canary = OpDelete, p, "", false
		s.add(t, orig, g.weight, "original deleted, then an encrypted copy written beside it"+g.how, true)
	}
}

// renamedOver: o renamed a file over one whose content the scorer knew, and
// what took its place destroyed that content's type (a PDF or text replaced
// by high-entropy or scrambled unknown bytes). Atomic saves (a document
// replaced by the same format), package managers' .dpkg-new and compressors
// keep or declare a format and are not counted.
func (s *Scorer) renamedOver(o Obs) (before, after *Features, ok bool) {
	if o.OldPath == "" {
		return nil, nil, false
	}
	b, okb := s.records[o.Path]
	a, oka := s.records[o.OldPath]
	if !okb || !oka {
		return nil, nil, false
	}
	if !s.destroyed(&b.f, &a.f) {
		return nil, nil, false
	}
	return &b.f, &a.f, true
}

// contentReplaced: o is new content (no writer opened the file with its
// old content: Before is nil) at a path whose original the scorer knew,
// and it destroyed that original's type, as renamedOver judges. This is a
// rename-over seen from the content side: the two fanotify groups
// (content, names) are read apart, and the close-write of F.t, read after
// `mv F.t F`, carries F's name, before or after the rename is read. The
// original is then judged against the content that took its place
// whichever event comes first. Content the same tree wrote there itself
// within the window is not an original.
func (s *Scorer) contentReplaced(o Obs) (record, bool) {
	if o.Before != nil || o.After == nil {
		return record{}, false
	}
	rec, ok := s.records[o.Path]
	if !ok || rec.writer == o.Tree && o.Time.Sub(rec.wrote) <= s.r.Window || !s.destroyed(&rec.f, o.After) {
		return record{}, false
	}
	return rec, true
}

// replaceWeight is the weight of a file replaced by another (rename-over,
// link-over, write-beside-then-delete): full when the same process family
// read the original first (an encryptor must read what it encrypts), and
// replaced_unread otherwise, so that one file replaced by a tool that never
// read it (a package manager, a sync client) stays below the threshold.
func (s *Scorer) replaceWeight(o Obs, rec record, ok bool) (int, string) {
	if ok && rec.reader != 0 && o.Time.Sub(rec.readAt) <= s.r.Window && s.sameFamily(rec, o) {
		return s.r.Weights.Replaced, ""
	}
	return s.r.Weights.ReplacedUnread, " (the original was not read by this process family first)"
}

// sameFamily: the record's reader is o's tree, or a sibling of it (the
// same parent: `openssl -in f -out f.t` and `mv f.t f` of one loop
// iteration), or its parent.
func (s *Scorer) sameFamily(rec record, o Obs) bool {
	if rec.reader == o.Tree {
		return true
	}
	if len(o.Ancestors) == 0 {
		return false
	}
	p := o.Ancestors[0].PID
	return rec.readerParent == p || rec.reader == p
}

// read records what an opened file holds and which family opened it.
func (s *Scorer) read(o Obs) {
	if o.After == nil {
		return
	}
	s.bound()
	rec := record{f: *o.After, reader: o.Tree, readAt: o.Time}
	if len(o.Ancestors) > 0 {
		rec.readerParent = o.Ancestors[0].PID
	}
	s.records[o.Path] = rec
}

// remember keeps the per-file records in step with what o did.
func (s *Scorer) remember(o Obs) {
	switch o.Op {
	case OpWrite, OpCreate:
		if o.After == nil {
			return
		}
		s.bound()
		rec := s.records[o.Path]
		rec.f, rec.writer, rec.wrote = *o.After, o.Tree, o.Time
		s.records[o.Path] = rec
	case OpRename:
		if o.OldPath == "" {
			delete(s.records, o.Path)
			return
		}
		// When what was moved is not known, the record of what was here
		// is kept: the close-write read later under this name
		// (contentReplaced) judges the replacement; if that write was
		// read first, the record already holds the new content.
		if rec, ok := s.records[o.OldPath]; ok {
			s.records[o.Path] = rec
		}
		delete(s.records, o.OldPath)
	case OpDelete:
		delete(s.records, o.Path)
	}
}

func (s *Scorer) bound() {
	if len(s.records) >= maxRecords {
		clear(s.records)
	}
}

// suspiciousRename: an extension appended or swapped to one that is not
// known and is not a rotation or date suffix (app.log.1, app.log-20240101).
// A temporary name given back the name it was made for is not: the new
// name is part of the old one (dpkg's messages.po.dpkg-new -> messages.po,
// rsync's .messages.po.Xy12ab -> messages.po), where ransomware's new name
// holds the old one (x.pdf -> x.pdf.lockbit).
func (s *Scorer) suspiciousRename(oldPath, newPath string) bool {
	if oldPath == "" {
		return false
	}
	if ob, nb := filepath.Base(oldPath), filepath.Base(newPath); len(nb) < len(ob) && strings.Contains(ob, nb) {
		return false
	}
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(newPath), "."))
	if ext == "" || ext == strings.ToLower(strings.TrimPrefix(filepath.Ext(oldPath), ".")) || s.r.known[ext] {
		return false
	}
	return !strings.ContainsAny(ext, "0123456789-~")
}

// note scores the same ransom-note-like name written in many folders.
func (s *Scorer) note(t *tree, o Obs, dir string) {
	base := strings.ToLower(filepath.Base(o.Path))
	hit := false
	for _, k := range s.r.Note.Keywords {
		if strings.Contains(base, k) {
			hit = true
			break
		}
	}
	if !hit || t.noted {
		return
	}
	if t.notes[base] == nil {
		if len(t.notes) > 64 {
			clear(t.notes)
		}
		t.notes[base] = map[string]bool{}
	}
	t.notes[base][dir] = true
	if len(t.notes[base]) >= s.r.Note.MinDirs {
		t.noted = true
		s.add(t, o, s.r.Weights.Note, fmt.Sprintf("ransom note %q written in %d folders", base, len(t.notes[base])), false)
	}
}

// breadth scores writes spread over many folders in a short interval.
func (s *Scorer) breadth(t *tree, o Obs, dir string) {
	prev, known := t.dirs[dir]
	t.dirs[dir] = o.Time
	// A folder already counted and still within the period cannot raise
	// the count: the walk over every folder (hundreds in an extraction,
	// on every write) is only needed when it could cross the threshold.
	if known && o.Time.Sub(prev) <= s.r.Breadth.Per && (t.dirsLive < s.r.Breadth.Dirs || o.Time.Sub(t.broad) <= s.r.Window) {
		return
	}
	n := 0
	for d, at := range t.dirs {
		if o.Time.Sub(at) <= s.r.Breadth.Per {
			n++
		} else {
			delete(t.dirs, d)
		}
	}
	t.dirsLive = n
	if n >= s.r.Breadth.Dirs && o.Time.Sub(t.broad) > s.r.Window {
		t.broad = o.Time
		s.add(t, o, s.r.Weights.Breadth, fmt.Sprintf("writes in %d folders within %s", n, s.r.Breadth.Per), false)
	}
}

// describe names what content became: "high-entropy unknown" for
// encrypted-looking content, "scrambled unknown (6.9 bits/byte)" for
// partial encryption.
func describe(f *Features, high float64) string {
	if f.Entropy >= high {
		return "high-entropy unknown"
	}
	return fmt.Sprintf("scrambled unknown, %.1f bits/byte", f.Entropy)
}

func name(f *Features) string {
	if f == nil || f.Magic == "" {
		return "plain content"
	}
	return f.Magic
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
