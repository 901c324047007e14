package ransomware

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func tree(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{}
	for i := range 12 {
		rel := filepath.Join(fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d.csv", i))
		b := bytes.Repeat([]byte(fmt.Sprintf("row %d,12.50\n", i)), 9000+i)
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[rel] = b
	}
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

func TestEveryModeEncryptsOnlyMarkedFilesAndUndoRestoresExactly(t *testing.T) {
	t.Parallel()
	for _, mode := range Modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir, files := tree(t)
			m, err := Mark(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Files) != len(files) {
				t.Fatalf("marked %d files, want %d (hidden skipped)", len(m.Files), len(files))
			}
			if _, err := Mark(dir); err == nil {
				t.Error("a marked directory was marked again")
			}
			total := 0
			for w := range 3 {
				n, err := Encrypt(dir, m, Options{Mode: mode, Worker: w, Workers: 3})
				if err != nil {
					t.Fatal(err)
				}
				total += n
			}
			if total != len(files) {
				t.Errorf("encrypted %d, want %d", total, len(files))
			}
			changed := 0
			for rel, want := range files {
				if got, err := os.ReadFile(filepath.Join(dir, rel)); err != nil || !bytes.Equal(got, want) {
					changed++
				}
			}
			if changed != len(files) {
				t.Errorf("%d of %d files changed", changed, len(files))
			}
			if b, _ := os.ReadFile(filepath.Join(dir, ".hidden")); string(b) != "keep" {
				t.Error("hidden file touched")
			}
			if _, err := Undo(dir); err != nil {
				t.Fatal(err)
			}
			for rel, want := range files {
				if got, err := os.ReadFile(filepath.Join(dir, rel)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s not restored: %v", rel, err)
				}
				if _, err := os.Stat(filepath.Join(dir, rel+Ext)); err == nil {
					t.Errorf("%s left behind", rel+Ext)
				}
			}
			for _, n := range []string{ManifestName, BackupDir} {
				if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
					t.Errorf("%s left behind", n)
				}
			}
		})
	}
}

func TestUndoOfUnmarkedDirectoryFails(t *testing.T) {
	t.Parallel()
	if _, err := Undo(t.TempDir()); err == nil {
		t.Fatal("undo of an unmarked directory succeeded")
	}
}
