package ransomware

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
)

func builtin(t *testing.T) *Rules {
	t.Helper()
	r, err := LoadRules(rules.Builtin, "ransomware")
	if err != nil {
		t.Fatalf("built-in ransomware rules: %v", err)
	}
	return r
}

func TestBuiltinRulesLoadAndPassTheirTests(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	if len(r.Tests) < 8 {
		t.Errorf("built-in rules carry %d test cases, want positive and negative samples", len(r.Tests))
	}
}

func TestBadRulesAreRejectedNamingEveryProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dir  string
		want []string
	}{
		{"invalid values", "testdata/badrules", []string{"window", "alert_score", "rmm_descendant_threshold_factor", "entropy_low", "min_sample", "note.min_dirs", "breadth", "behaviour", "canary"}},
		{"failing test case", "testdata/failingtest", []string{"wrongly expects gzip to alert"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadRules(os.DirFS(tc.dir), ".")
			if err == nil {
				t.Fatal("bad rules loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func TestExtract(t *testing.T) {
	t.Parallel()
	text := bytes.Repeat([]byte("date,till,amount\n2024-01-01,3,12.50\n"), 120)
	tests := []struct {
		name   string
		sample []byte
		magic  string
		minEnt float64
		maxEnt float64
	}{
		{"pdf", append([]byte("%PDF-1.7\n"), text...), "pdf", 0, 6},
		{"csv text", text, "text", 0, 5},
		{"random", random(SampleSize), "", 7.8, 8},
		{"gzip of random", gz(random(SampleSize))[:SampleSize], "gzip", 7.5, 8},
		{"sqlite", append([]byte("SQLite format 3\x00"), make([]byte, 2000)...), "sqlite", 0, 1},
		{"empty", nil, "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := Extract(tc.sample, int64(len(tc.sample)))
			if f.Magic != tc.magic || f.Entropy < tc.minEnt || f.Entropy > tc.maxEnt {
				t.Errorf("Extract = %+v, want magic %q entropy in [%g, %g]", f, tc.magic, tc.minEnt, tc.maxEnt)
			}
		})
	}
}

func TestScorerAggregatesWorkersAndListsFilesFirstFirst(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	s := NewScorer(r)
	t0 := time.Now()
	enc := Extract(random(SampleSize), SampleSize)
	before := &Features{Magic: "text", Entropy: 4.2, Sampled: SampleSize}
	// Two renames by two workers of tree 100: 50 points, no alert yet.
	for i, pid := range []int{101, 102} {
		if _, ok := s.Observe(Obs{Time: t0, Tree: 100, PID: pid, Op: OpRename, OldPath: "/d/f" + string(rune('a'+i)), Path: "/d/f" + string(rune('a'+i)) + ".crypt"}); ok {
			t.Fatal("alerted on two renames")
		}
	}
	if got := s.Score(100, t0); got != 2*r.Weights.Rename {
		t.Fatalf("score %d, want %d", got, 2*r.Weights.Rename)
	}
	v, ok := s.Observe(Obs{Time: t0, Tree: 100, PID: 103, Op: OpWrite, Path: "/d/g.csv", Before: before, After: &enc})
	if !ok {
		t.Fatal("no alert after a destroyed file")
	}
	if v.Files[0] != "/d/fa" || v.Total != 3 || v.Tree != 100 {
		t.Errorf("verdict %+v, want first /d/fa, 3 files, tree 100", v)
	}
	if _, again := s.Observe(Obs{Time: t0, Tree: 100, PID: 103, Op: OpWrite, Path: "/d/h.csv", Before: before, After: &enc}); again {
		t.Error("a tree alerted twice")
	}
	if s.Score(200, t0) != 0 {
		t.Error("another tree has a score")
	}
}

func TestDetectorTurnsVerdictsIntoAlerts(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	d := NewDetector(r)
	trigger := &event.Event{Process: &event.Process{PID: 7, Name: "enc"}, File: &event.File{Path: "/d/b.pdf"}}
	v := Verdict{Tree: 7, Score: 100, Files: []string{"/d/a.pdf", "/d/b.pdf"}, Total: 2, Reasons: []string{"x"}}
	tests := []struct {
		name     string
		ev       event.Event
		rule     string
		response string
	}{
		{"acted synchronously", VerdictEvent(v, trigger, []int{7}, &event.Response{Action: event.ActionKill, Result: event.ResultOK}), "TW-RANSOM-0001", ""},
		{"left to the responder", VerdictEvent(v, trigger, nil, nil), "TW-RANSOM-0001", event.ActionKill},
		{"canary", VerdictEvent(Verdict{Tree: 7, Score: 100, Canary: true, Files: []string{"/d/000.pdf"}, Total: 1}, trigger, nil, nil), "TW-RANSOM-0002", event.ActionKill},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dets := d.Detect(&tc.ev)
			if len(dets) != 1 {
				t.Fatalf("%d detections", len(dets))
			}
			a := dets[0].Alert
			if a.Rule.ID != tc.rule || a.Rule.Ruleset != event.RulesetRansomware || dets[0].Response != tc.response {
				t.Errorf("alert rule %s ruleset %s response %q", a.Rule.ID, a.Rule.Ruleset, dets[0].Response)
			}
			if a.File.Path != tc.ev.Tillwatch.Ransomware.Files[0] || a.Tillwatch.FilesAffected != tc.ev.Tillwatch.FilesAffected {
				t.Errorf("file.path %s files_affected %d", a.File.Path, a.Tillwatch.FilesAffected)
			}
			if tc.response != "" && (dets[0].Target == nil || !dets[0].Target.Tree || dets[0].Target.PID != 7) {
				t.Errorf("target %+v, want tree of 7", dets[0].Target)
			}
			if err := a.Validate(); err != nil && !strings.Contains(err.Error(), "host") && !strings.Contains(err.Error(), "agent") && !strings.Contains(err.Error(), "@timestamp") {
				t.Errorf("alert invalid: %v", err)
			}
		})
	}
	if d.Detect(&event.Event{Event: event.Meta{Kind: event.KindEvent, Dataset: event.DatasetFile}}) != nil {
		t.Error("plain file events must not alert")
	}
}

// The RMM threshold factor applies only to trees that descend from an RMM
// agent, and the verdict and alert say so.
func TestRMMDescendantsAreStoppedAtTheLoweredThreshold(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	if r.RMMDescendantThresholdFactor != 0.5 {
		t.Fatalf("built-in rmm_descendant_threshold_factor = %g, want 0.5", r.RMMDescendantThresholdFactor)
	}
	agent := &RMMAgent{Product: "kaseya-vsa", ProductName: "Kaseya VSA", Name: "agentmon", Executable: "/opt/kaseya/agentmon", PID: 4242}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		rmm       *RMMAgent
		factor    float64 // 0: the built-in value
		renames   int
		alertAt   int // the rename that alerts (1-based); 0: none
		threshold int
	}{
		{"rmm descendant: 2 renames (50) reach 100 x 0.5", agent, 0, 4, 2, 50},
		{"no rmm ancestry: 4 renames are needed", nil, 0, 4, 4, 100},
		{"no rmm ancestry: 3 renames do not alert", nil, 0, 3, 0, 100},
		{"rmm descendant with factor 1: unchanged", agent, 1, 4, 4, 100},
		{"rmm descendant with factor 0.3: 30 rounds to 2 renames", agent, 0.3, 4, 2, 30},
		{"rmm descendant, 1 rename: below even the lowered threshold", agent, 0, 1, 0, 50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rr := *r
			if tc.factor != 0 {
				rr.RMMDescendantThresholdFactor = tc.factor
			}
			s := NewScorer(&rr)
			if got := s.Threshold(tc.rmm != nil); got != tc.threshold {
				t.Errorf("Threshold = %d, want %d", got, tc.threshold)
			}
			at := 0
			var v Verdict
			for i := range tc.renames {
				p := "/d/f" + string(rune('a'+i)) + ".pdf"
				if got, ok := s.Observe(Obs{Time: t0.Add(time.Duration(i) * time.Millisecond), Tree: 7, PID: 7, Op: OpRename, OldPath: p, Path: p + ".qwerty", RMM: tc.rmm}); ok && at == 0 {
					at, v = i+1, got
				}
			}
			if at != tc.alertAt {
				t.Fatalf("alerted at rename %d, want %d", at, tc.alertAt)
			}
			if at == 0 {
				return
			}
			if v.Threshold != tc.threshold {
				t.Errorf("verdict threshold %d, want %d", v.Threshold, tc.threshold)
			}
			last := v.Reasons[len(v.Reasons)-1]
			if tc.rmm == nil {
				if v.RMM != nil || strings.Contains(last, "RMM") {
					t.Errorf("verdict without rmm ancestry carries RMM context: %+v %q", v.RMM, last)
				}
				return
			}
			if v.RMM == nil || v.RMM.PID != 4242 || !strings.Contains(last, "RMM agent agentmon (kaseya-vsa, unapproved, pid 4242)") {
				t.Errorf("verdict RMM %+v, last reason %q", v.RMM, last)
			}
			ev := VerdictEvent(v, &event.Event{Process: &event.Process{PID: 7}, File: &event.File{Path: "/d/fa.pdf"}}, nil, nil)
			dets := NewDetector(r).Detect(&ev)
			if len(dets) != 1 {
				t.Fatalf("%d detections, want 1", len(dets))
			}
			a := dets[0].Alert
			if a.Tillwatch == nil || a.Tillwatch.RMM == nil || a.Tillwatch.RMM.Product != "kaseya-vsa" || a.Tillwatch.RMM.AgentPID != 4242 ||
				a.Tillwatch.RMM.AgentExe != "/opt/kaseya/agentmon" || a.Tillwatch.RMM.Approved || !strings.Contains(a.Message, "RMM agent kaseya-vsa") {
				t.Errorf("alert rmm context %+v, message %q", a.Tillwatch.RMM, a.Message)
			}
		})
	}
}

func TestBlockOffsets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size int64
		want []int64
	}{
		{0, []int64{0}},
		{SampleSize, []int64{0}},
		{SampleSize + 100, []int64{0, SampleSize}},         // the tail never re-reads the head
		{2*SampleSize + 100, []int64{0, SampleSize + 100}}, // no room for a middle block
		{3 * SampleSize, []int64{0, SampleSize, 2 * SampleSize}},
		{64 << 10, []int64{0, 32 << 10, 60 << 10}}, // head, middle, last block
		{1<<20 + 7, []int64{0, 512 << 10, 1<<20 + 7 - SampleSize}},
	}
	for _, tc := range tests {
		if got := blockOffsets(tc.size); !slices.Equal(got, tc.want) {
			t.Errorf("blockOffsets(%d) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

// csvFile is a realistic CSV of n bytes.
func csvFile(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "2024-01-%02d,till %d,%d.%02d,coffee and a bun\n", i%28+1, i%7, i%90, i%100)
	}
	return b.Bytes()[:n]
}

// encryptStriped XORs every other 16-byte stripe with a keystream, as
// LockFile does.
func encryptStriped(b []byte) []byte {
	out := bytes.Clone(b)
	key := random(len(b))
	for off := 0; off < len(out); off += 32 {
		for i := off; i < min(off+16, len(out)); i++ {
			out[i] ^= key[i]
		}
	}
	return out
}

// encryptAfterHeader leaves the first block intact and encrypts the rest,
// as families that keep a file's header do.
func encryptAfterHeader(b []byte) []byte {
	out := bytes.Clone(b)
	key := random(len(b))
	for i := SampleSize; i < len(out); i++ {
		out[i] ^= key[i]
	}
	return out
}

// TestPartialEncryptionIsSeen samples real content through Sample, as the
// guard does through fanotify's descriptor, before and after each kind of
// partial encryption, and checks the scorer's verdict on one file (reached
// when the tree opens its next file).
func TestPartialEncryptionIsSeen(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	csv := csvFile(48 << 10)
	pdf := append([]byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), csvFile(40<<10)...)
	tests := []struct {
		name   string
		before []byte
		after  []byte
		alert  bool
	}{
		{"whole CSV encrypted", csv, random(len(csv)), true},
		{"CSV striped every other 16 bytes (LockFile)", csv, encryptStriped(csv), true},
		{"PDF striped every other 16 bytes", pdf, encryptStriped(pdf), true},
		{"CSV encrypted after its first block", csv, encryptAfterHeader(csv), true},
		{"CSV edited (a line changed)", csv, bytes.Replace(csv, []byte("coffee"), []byte("tea...")[:6], 1), false},
		{"CSV appended to", csv, append(bytes.Clone(csv), csvFile(8<<10)...), false},
		{"CSV rewritten as UTF-16", csv, utf16(csv), false},
		{"CSV gzipped in place", csv, gz(csv), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := Sample(bytes.NewReader(tc.before).ReadAt, int64(len(tc.before)))
			after := Sample(bytes.NewReader(tc.after).ReadAt, int64(len(tc.after)))
			s := NewScorer(r)
			now := time.Now()
			// One file alone never alerts; the tree's next open for
			// writing of another file does.
			if _, alone := s.Observe(Obs{Time: now, Tree: 1, PID: 1, Op: OpWrite, Path: "/d/x", Before: &before, After: &after}); alone {
				t.Error("one file alone reached the threshold")
			}
			_, alerted := s.Observe(Obs{Time: now, Tree: 1, PID: 1, Op: OpOpen, Path: "/d/y"})
			if alerted != tc.alert {
				t.Errorf("alert = %v, want %v (before %+v, after %+v)", alerted, tc.alert, before, after)
			}
		})
	}
}

func utf16(b []byte) []byte {
	out := []byte{0xff, 0xfe}
	for _, c := range b {
		out = append(out, c, 0)
	}
	return out
}

// TestZlibIsRecognisedByInflatingIt: a git loose object (zlib) is a known
// format, even of incompressible content; two zlib header bytes in front of
// random bytes are not.
func TestZlibIsRecognisedByInflatingIt(t *testing.T) {
	t.Parallel()
	var obj bytes.Buffer
	zw := zlib.NewWriter(&obj)
	_, _ = zw.Write(append([]byte("blob 65536\x00"), random(64<<10)...))
	_ = zw.Close()
	fake := append([]byte{0x78, 0x9c}, random(64<<10)...)
	var gzBuf bytes.Buffer
	gw := gzip.NewWriter(&gzBuf)
	_, _ = gw.Write(random(20 << 10))
	_ = gw.Close()
	fakeGz := append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, random(20<<10)...)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"git object of random content", obj.Bytes(), "zlib"},
		{"zlib header before random bytes", fake, ""},
		{"gzip of random content", gzBuf.Bytes(), "gzip"},
		{"gzip header before random bytes", fakeGz, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := Sample(bytes.NewReader(tc.b).ReadAt, int64(len(tc.b)))
			if f.Magic != tc.want {
				t.Errorf("magic %q, want %q (entropy %.2f)", f.Magic, tc.want, f.Entropy)
			}
		})
	}
}

// TestFamilyOfCountsTheStoppedWorker: FamilyOf makes Observe's family-root
// decision without changing the scorer. A worker stopped in the kernel
// (a decoy hit the guard never saw) joins the family of an ancestor that
// already counts another suspicious worker; with none counted, or only
// itself, it is ended alone.
func TestFamilyOfCountsTheStoppedWorker(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	t0 := time.Now()
	enc := Extract(random(SampleSize), SampleSize)
	before := &Features{Magic: "text", Entropy: 4.2, Sampled: SampleSize}
	// xargs (pid 2) -> per-file sh (pid 10+i) -> worker tree (pid 100+i).
	anc := func(i int) []Spawner {
		return []Spawner{{PID: 10 + i, Name: "sh"}, {PID: 2, Name: "xargs"}, {PID: 1000, Name: "bash"}}
	}
	s := NewScorer(r)
	if got := s.FamilyOf(100, anc(0), t0); got != -1 {
		t.Errorf("no worker counted yet: FamilyOf = %d, want -1", got)
	}
	if _, ok := s.Observe(Obs{Time: t0, Tree: 100, PID: 100, Op: OpWrite, Path: "/d/a.csv", Before: before, After: &enc, Ancestors: anc(0)}); ok {
		t.Fatal("one destroyed file stopped a tree")
	}
	if got := s.FamilyOf(100, anc(0), t0); got != -1 {
		t.Errorf("the only suspicious worker again: FamilyOf = %d, want -1", got)
	}
	if got := s.FamilyOf(101, anc(1), t0); got != 1 {
		t.Errorf("a second worker of xargs: FamilyOf = %d, want 1 (xargs)", got)
	}
	if got := s.FamilyOf(101, anc(1), t0.Add(r.Window+time.Second)); got != -1 {
		t.Errorf("after the window: FamilyOf = %d, want -1", got)
	}
}

// TestUnsampledWritesAreJudgedByName: without permission events no write
// is sampled before it. Two existing files whose names say PDF and CSV
// turned into encrypted-looking bytes stop the tree; the same content in
// files the tree created (a create event first), under names that claim
// nothing, or with sampling on (Unsampled false: a new file) does not.
func TestUnsampledWritesAreJudgedByName(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	t0 := time.Now()
	enc := Extract(random(SampleSize), SampleSize)
	write := func(s *Scorer, path string, unsampled bool) bool {
		_, ok := s.Observe(Obs{Time: t0, Tree: 100, PID: 100, Op: OpCreate, Path: path, After: &enc, Unsampled: unsampled})
		return ok
	}
	for _, tc := range []struct {
		name      string
		paths     []string
		unsampled bool
		created   bool
		want      bool
	}{
		{"existing pdf and csv, unsampled", []string{"/d/a.pdf", "/d/b.csv"}, true, false, true},
		{"names that claim nothing", []string{"/d/a.bin", "/d/b.enc"}, true, false, false},
		{"files the tree created", []string{"/d/a.pdf", "/d/b.csv"}, true, true, false},
		{"sampling on: new files", []string{"/d/a.pdf", "/d/b.csv"}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScorer(r)
			stopped := false
			for _, p := range tc.paths {
				if tc.created {
					s.Observe(Obs{Time: t0, Tree: 100, PID: 100, Op: OpCreate, Path: p})
				}
				stopped = write(s, p, tc.unsampled) || stopped
			}
			if stopped != tc.want {
				t.Errorf("stopped %v, want %v", stopped, tc.want)
			}
		})
	}
	// One file alone never stops a tree.
	s := NewScorer(r)
	if write(s, "/d/only.pdf", true) {
		t.Error("one unsampled file stopped the tree")
	}
}

// TestBreadthCountsFoldersWithinThePeriod: writes in breadth.dirs folders
// within breadth.per add the breadth weight once per window; writes into
// folders already counted add nothing until the window has passed, and
// folders out of the period are no longer counted.
func TestBreadthCountsFoldersWithinThePeriod(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	s := NewScorer(r)
	plain := &Features{Magic: "text", Entropy: 4.2, Sampled: 100}
	t0 := time.Now()
	write := func(at time.Time, dir int) {
		s.Observe(Obs{Time: at, Tree: 100, PID: 101, Op: OpCreate, Path: fmt.Sprintf("/d/%d/f.csv", dir), After: plain})
	}
	for d := range r.Breadth.Dirs - 1 {
		write(t0, d)
	}
	if got := s.Score(100, t0); got != 0 {
		t.Fatalf("score %d after %d folders, want 0", got, r.Breadth.Dirs-1)
	}
	write(t0, r.Breadth.Dirs-1)
	if got := s.Score(100, t0); got != r.Weights.Breadth {
		t.Fatalf("score %d after %d folders, want %d", got, r.Breadth.Dirs, r.Weights.Breadth)
	}
	// Again in the same folders, within the window: nothing more.
	t1 := t0.Add(r.Breadth.Per / 2)
	for d := range r.Breadth.Dirs {
		write(t1, d)
	}
	if got := s.Score(100, t1); got != r.Weights.Breadth {
		t.Fatalf("score %d after writing the same folders again, want %d", got, r.Weights.Breadth)
	}
	// Past the window, the folders still within the period: counted again.
	t2 := t0.Add(r.Window + time.Second)
	for d := range r.Breadth.Dirs {
		write(t2.Add(-r.Breadth.Per/2), d)
	}
	write(t2, 0)
	if got := s.Score(100, t2); got != r.Weights.Breadth {
		t.Fatalf("score %d in the next window, want %d (the first has expired)", got, r.Weights.Breadth)
	}
	// Far later, one folder alone: the others are out of the period.
	t3 := t2.Add(r.Window + r.Breadth.Per + time.Second)
	write(t3, 1)
	if got := s.Score(100, t3); got != 0 {
		t.Fatalf("score %d for one folder long after, want 0", got)
	}
}

// TestSuspectIsAboutContent: a tree is suspect once it writes an
// encrypted-looking new file or scores a replacement, not for writing in
// many folders (an extraction), which made every create of a file storm
// wait for the sampling of the file before it.
func TestSuspectIsAboutContent(t *testing.T) {
	t.Parallel()
	r := builtin(t)
	t0 := time.Now()
	enc := Extract(random(SampleSize), SampleSize)
	text := Extract([]byte("id,amount\n1,2\n3,4\n"), SampleSize)
	s := NewScorer(r)
	for i := range 40 { // breadth: 40 folders within the period
		s.Observe(Obs{Time: t0, Tree: 10, PID: 10, Op: OpCreate, Path: fmt.Sprintf("/x/d%d/f.csv", i), After: &text})
	}
	if s.Score(10, t0) == 0 {
		t.Fatal("the extraction scored nothing for breadth: the case shows nothing")
	}
	if s.Suspect(10, t0) {
		t.Error("an extraction's tree is suspect")
	}
	s.Observe(Obs{Time: t0, Tree: 20, PID: 20, Op: OpCreate, Path: "/d/a.csv.locked", After: &enc})
	if !s.Suspect(20, t0) {
		t.Error("a tree that wrote an encrypted-looking new file is not suspect")
	}
	if s.Suspect(20, t0.Add(r.Window+time.Second)) {
		t.Error("still suspect after the window")
	}
	if s.Suspect(30, t0) {
		t.Error("an unknown tree is suspect")
	}
}
