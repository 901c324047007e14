package canary

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPlantSortsFirstAndLastAndRestores(t *testing.T) {
	t.Parallel()
	state, dir := t.TempDir(), t.TempDir()
	for _, n := range []string{"Accounts.xlsx", "menu.pdf", "Zebra.txt", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("user data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	first, last := filepath.Join(dir, names[0]), filepath.Join(dir, names[len(names)-1])
	if !s.Is(first) || !s.Is(last) || len(s.Paths()) != 2 {
		t.Fatalf("decoys %v do not sort first and last in %v", s.Paths(), names)
	}
	for _, p := range s.Paths() {
		if strings.HasPrefix(filepath.Base(p), ".") {
			t.Errorf("decoy %s is hidden", p)
		}
		b, _ := os.ReadFile(p)
		switch filepath.Ext(p) {
		case ".pdf":
			if !bytes.HasPrefix(b, []byte("%PDF-")) || !bytes.Contains(b, []byte("%%EOF")) {
				t.Errorf("%s is not a PDF", p)
			}
		case ".docx":
			if _, err := zip.NewReader(bytes.NewReader(b), int64(len(b))); err != nil {
				t.Errorf("%s is not a zip: %v", p, err)
			}
		}
	}
	// Tamper with both; a second Plant (a restart) and Restore put them back.
	want, _ := os.ReadFile(first)
	if err := os.WriteFile(first, []byte("encrypted"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(last); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(first); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(first); !bytes.Equal(got, want) {
		t.Error("Restore did not put the original content back")
	}
	s2, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(last); err != nil || !slices.Equal(sorted(s2.Paths()), sorted(s.Paths())) {
		t.Errorf("restart did not restore %s: %v", last, err)
	}
}

func TestPlantNeverOverwritesUserFiles(t *testing.T) {
	t.Parallel()
	state, dir := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "canaries"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "canaries", "number"), []byte("12345\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Pre-create every candidate name.
	var all []string
	for _, f := range append(slices.Clone(firstNames), lastNames...) {
		all = append(all, fmt.Sprintf(f, "12345"))
	}
	for _, n := range all {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Paths()) != 0 {
		t.Errorf("planted over user files: %v", s.Paths())
	}
	for _, n := range all {
		if b, _ := os.ReadFile(filepath.Join(dir, n)); string(b) != "mine" {
			t.Errorf("%s overwritten", n)
		}
	}
}

func sorted(x []string) []string { slices.Sort(x); return x }

// TestNamesCarryTheInstallNumber checks that decoy names carry a number
// drawn once per install and kept across restarts, and that a corrupt
// number file is an error, not a silent new name.
func TestNamesCarryTheInstallNumber(t *testing.T) {
	t.Parallel()
	state, dir := t.TempDir(), t.TempDir()
	s, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(state, "canaries", "number"))
	if err != nil {
		t.Fatal(err)
	}
	num := strings.TrimSpace(string(b))
	names := s.Names()
	if len(names) != 2 {
		t.Fatalf("names %v, want 2", names)
	}
	for _, n := range names {
		if !strings.Contains(n, num) {
			t.Errorf("decoy %q does not carry the install number %s", n, num)
		}
	}
	s2, err := Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(s2.Names()), sorted(names)) {
		t.Errorf("restart renamed the decoys: %v, then %v", names, s2.Names())
	}
	if err := os.WriteFile(filepath.Join(state, "canaries", "number"), []byte("x1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Plant(state, []string{dir}); err == nil || !strings.Contains(err.Error(), "five digits") {
		t.Errorf("a corrupt number file: %v, want an error naming it", err)
	}
}
