package canary

import (
	"os"
	"path/filepath"
	"testing"
)

// TestJudgeTellsDecoysFromNamesakes runs the judgement against this test
// process (its own /proc entry): a same-named file elsewhere is not a hit,
// a planted decoy held open for writing, renamed away, replaced or
// truncated in place is.
func TestJudgeTellsDecoysFromNamesakes(t *testing.T) {
	t.Parallel()
	state, dir, elsewhere := t.TempDir(), t.TempDir(), t.TempDir()
	s, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var decoy string
	for _, p := range s.Paths() {
		if filepath.Ext(p) != "" {
			decoy = p
			break
		}
	}
	base := filepath.Base(decoy)
	pid := os.Getpid()

	// A namesake elsewhere, even open for writing: not a hit.
	f, err := os.OpenFile(filepath.Join(elsewhere, base), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if hit, why := s.Judge("/proc", pid, base); hit {
		t.Errorf("a namesake elsewhere judged a decoy hit: %s", why)
	}
	f.Close()

	// The decoy open for reading: not a hit; for writing: a hit.
	r, err := os.Open(decoy)
	if err != nil {
		t.Fatal(err)
	}
	if hit, why := s.Judge("/proc", pid, base); hit {
		t.Errorf("a reader of the decoy judged a hit: %s", why)
	}
	r.Close()
	w, err := os.OpenFile(decoy, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hit, _ := s.Judge("/proc", pid, base); !hit {
		t.Error("the decoy held open for writing was not judged a hit")
	}
	w.Close()

	// Renamed away, then put back by Restore; replaced by another file.
	if err := os.Rename(decoy, decoy+".locked"); err != nil {
		t.Fatal(err)
	}
	if hit, _ := s.Judge("/proc", pid, base); !hit {
		t.Error("a decoy renamed away was not judged a hit")
	}
	if err := s.Restore(decoy); err != nil {
		t.Fatal(err)
	}
	if hit, why := s.Judge("/proc", pid, base); hit {
		t.Errorf("a restored decoy judged a hit: %s", why)
	}
	b, _ := os.ReadFile(decoy)
	if err := os.WriteFile(decoy+".t", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(decoy+".t", decoy); err != nil { // same bytes, another file
		t.Fatal(err)
	}
	if hit, _ := s.Judge("/proc", pid, base); !hit {
		t.Error("a decoy replaced by rename was not judged a hit")
	}

	// Truncated by path (no descriptor, same file): a hit.
	if err := s.Restore(decoy); err != nil {
		t.Fatal(err)
	}
	if hit, why := s.Judge("/proc", pid, base); hit {
		t.Fatalf("a restored decoy judged a hit: %s", why)
	}
	if err := os.Truncate(decoy, 0); err != nil {
		t.Fatal(err)
	}
	if hit, _ := s.Judge("/proc", pid, base); !hit {
		t.Error("a decoy truncated in place was not judged a hit")
	}
}
