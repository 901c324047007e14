package rules

import (
	"bytes"
	"io/fs"
	"os"
	"testing"

	"github.com/tillwatch/tillwatch/rules/archive"
)

// TestBuiltinIsFresh: the archive in the binaries holds exactly the rule
// files of this folder. A rule author who changed a file and forgot
// `make rules` gets told so here.
func TestBuiltinIsFresh(t *testing.T) {
	t.Parallel()
	fresh, err := archive.Pack(os.DirFS("."))
	if err != nil {
		t.Fatal(err)
	}
	want, err := archive.Unpack(fresh)
	if err != nil {
		t.Fatal(err)
	}
	stale := func(format string, a ...any) {
		t.Helper()
		t.Errorf("rules/builtin.tar.gz is stale ("+format+"): run `make rules` and commit it", a...)
	}
	seen := map[string]bool{}
	_ = fs.WalkDir(want, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		seen[p] = true
		a, _ := fs.ReadFile(want, p)
		b, err := fs.ReadFile(Builtin, p)
		if err != nil {
			stale("%s missing", p)
		} else if !bytes.Equal(a, b) {
			stale("%s changed", p)
		}
		return nil
	})
	_ = fs.WalkDir(Builtin, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !seen[p] {
			stale("%s no longer exists", p)
		}
		return err
	})
	if len(seen) < 5 {
		t.Fatalf("only %d rule files packed; the Sources patterns are wrong", len(seen))
	}
}

func TestUnpackRefusesGarbage(t *testing.T) {
	t.Parallel()
	if _, err := archive.Unpack([]byte("not gzip")); err == nil {
		t.Error("garbage accepted")
	}
}
