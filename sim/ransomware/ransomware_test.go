package ransomware

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
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

func TestAdaptiveModesEncryptEveryFileAndUndoRestoresExactly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    string
		tool    string
		workers int
	}{
		{ModeRenameOver, "", 1},
		{ModeOpenSSLLoop, "openssl", 1},
		{ModeOpenSSLLoop, "openssl", 3},
		{ModeGPGLoop, "gpg", 2},
		{ModeDDLoop, "dd", 1},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.mode, tc.workers), func(t *testing.T) {
			t.Parallel()
			if tc.tool != "" {
				if _, err := exec.LookPath(tc.tool); err != nil {
					t.Skipf("%s not installed", tc.tool)
				}
			}
			dir, files := tree(t)
			m, err := Mark(dir)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tool == "" {
				_, err = Encrypt(dir, m, Options{Mode: tc.mode, Workers: 1, Order: OrderSize})
			} else {
				var out bytes.Buffer
				_, err = Drive(context.Background(), dir, m, Options{Mode: tc.mode, Workers: tc.workers, Order: OrderReverse}, nil, &out, &out)
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out.String())
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			for rel, want := range files {
				got, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil || bytes.Equal(got, want) {
					t.Errorf("%s not encrypted in place (%v)", rel, err)
				}
				if _, err := os.Stat(filepath.Join(dir, rel+TmpExt)); err == nil {
					t.Errorf("%s left its temporary", rel)
				}
			}
			if _, err := Undo(dir); err != nil {
				t.Fatal(err)
			}
			for rel, want := range files {
				if got, _ := os.ReadFile(filepath.Join(dir, rel)); !bytes.Equal(got, want) {
					t.Errorf("%s not restored", rel)
				}
			}
		})
	}
}

func TestOrders(t *testing.T) {
	t.Parallel()
	m := &Manifest{Files: []Entry{{Path: "a", Size: 1}, {Path: "b", Size: 3}, {Path: "c", Size: 2}}}
	for order, want := range map[string]string{OrderName: "abc", OrderReverse: "cba", OrderSize: "bca"} {
		got := ""
		for _, e := range m.Ordered(order) {
			got += e.Path
		}
		if got != want {
			t.Errorf("order %s: %s, want %s", order, got, want)
		}
	}
}

// TestUndoRemovesTheTemporaryOfAKilledWrite: a simulator killed between
// creating a copy's temporary file and renaming it into place (as the
// sensor stops it) leaves ".FILE.tillsim.<hex>.tmp"; undo removes it, and
// nothing else that merely looks alike.
func TestUndoRemovesTheTemporaryOfAKilledWrite(t *testing.T) {
	t.Parallel()
	dir, files := tree(t)
	if _, err := Mark(dir); err != nil {
		t.Fatal(err)
	}
	var rel string
	for r := range files {
		rel = r
		break
	}
	d, base := filepath.Dir(filepath.Join(dir, rel)), filepath.Base(rel)
	left := filepath.Join(d, "."+base+Ext+".4058b54958fc140c.tmp")
	alike := filepath.Join(d, "."+base+Ext+".not-ours.tmp")
	for _, p := range []string{left, alike} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Undo(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); err == nil {
		t.Errorf("%s left behind", left)
	}
	if _, err := os.Stat(alike); err != nil {
		t.Errorf("%s (not the simulator's) removed: %v", alike, err)
	}
}
