//go:build cgo

package yara

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cacheRules writes a rule folder whose rule includes another file.
func cacheRules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"main.yar":    "include \"strings.yar\"\nrule Cache_Test { meta: id = \"T-1\" condition: Cache_Helper }\n",
		"strings.yar": "rule Cache_Helper { strings: $a = \"cache-marker-1\" condition: $a }\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, _ := filepath.Glob(filepath.Join(dir, "yara-*.rules"))
	return es
}

func scanCount(t *testing.T, r *Rules, body string) int {
	t.Helper()
	ms, err := r.ScanMem([]byte(body), Externals{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// TestCompileCached: the second compile of the same sources loads the
// entry; a damaged entry, a changed include and an entry others may write
// are compiled again (one log line each), never loaded.
func TestCompileCached(t *testing.T) {
	t.Parallel()
	rulesDir := cacheRules(t)
	cache := filepath.Join(t.TempDir(), "c")
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	load := func() *Rules {
		t.Helper()
		srcs, err := LoadPath(rulesDir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := CompileCached(srcs, cache, log)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := load()
	es := cacheEntries(t, cache)
	if len(es) != 1 {
		t.Fatalf("entries after the first compile: %v", es)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache folder mode: %v %v", fi.Mode(), err)
	}
	if got := scanCount(t, r, "x cache-marker-1 x"); got != 2 {
		t.Fatalf("compiled set: %d matches, want 2", got)
	}
	before, _ := os.ReadFile(es[0])
	r = load()
	if got := scanCount(t, r, "x cache-marker-1 x"); got != 2 || logged.Len() != 0 {
		t.Fatalf("cached set: %d matches, want 2; log %q", got, logged.String())
	}
	if after, _ := os.ReadFile(es[0]); !bytes.Equal(before, after) {
		t.Fatal("a cache hit rewrote the entry")
	}

	// Damage: one byte of the compiled rules flipped.
	b := bytes.Clone(before)
	b[len(b)-10] ^= 0xff
	if err := os.WriteFile(es[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = load()
	if got := scanCount(t, r, "cache-marker-1"); got != 2 || !strings.Contains(logged.String(), "damaged") {
		t.Fatalf("damaged entry: %d matches, log %q", got, logged.String())
	}
	if after, _ := os.ReadFile(es[0]); !bytes.Equal(before, after) {
		t.Fatal("the damaged entry was not replaced")
	}

	// An included file changes: the entry is stale.
	logged.Reset()
	if err := os.WriteFile(filepath.Join(rulesDir, "strings.yar"), []byte("rule Cache_Helper { strings: $a = \"cache-marker-2\" condition: $a }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = load()
	if scanCount(t, r, "cache-marker-1") != 0 || scanCount(t, r, "cache-marker-2") != 2 || !strings.Contains(logged.String(), "changed") {
		t.Fatalf("changed include: old rules still used; log %q", logged.String())
	}

	// An entry writable by others is not trusted.
	logged.Reset()
	if err := os.Chmod(es[0], 0o666); err != nil {
		t.Fatal(err)
	}
	r = load()
	if scanCount(t, r, "cache-marker-2") != 2 || !strings.Contains(logged.String(), "writable by others") {
		t.Fatalf("world-writable entry: log %q", logged.String())
	}
	if fi, _ := os.Stat(es[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("entry rewritten with mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestCompileCachedUnsafeFolder: a cache folder others may write to is
// not used at all; the rules still compile.
func TestCompileCachedUnsafeFolder(t *testing.T) {
	t.Parallel()
	cache := t.TempDir()
	if err := os.Chmod(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	srcs, err := LoadPath(cacheRules(t))
	if err != nil {
		t.Fatal(err)
	}
	r, err := CompileCached(srcs, cache, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil || scanCount(t, r, "cache-marker-1") != 2 {
		t.Fatalf("compile: %v", err)
	}
	if len(cacheEntries(t, cache)) != 0 || !strings.Contains(logged.String(), "not used") {
		t.Fatalf("entries written to a shared folder; log %q", logged.String())
	}
}

// TestCachePrune keeps the newest cacheKeep entries.
func TestCachePrune(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i := range cacheKeep + 3 {
		if err := os.WriteFile(filepath.Join(dir, "yara-"+strings.Repeat("a", i+1)+".rules"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pruneCache(dir)
	if n := len(cacheEntries(t, dir)); n != cacheKeep {
		t.Fatalf("%d entries after pruning, want %d", n, cacheKeep)
	}
}
