package filehash

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func sum(t *testing.T, c *Cache, p string, limit int64) (string, error) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, _, err := c.Sum(f, limit)
	return s, err
}

func TestSumIsCachedPerVersionAndNeverStale(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "agent")
	a := []byte("#!/bin/sh\necho version one\n")
	if err := os.WriteFile(p, a, 0o755); err != nil {
		t.Fatal(err)
	}
	c := New(0)
	for range 2 {
		got, err := sum(t, c, p, 1<<20)
		if err != nil || got != digest(a) {
			t.Fatalf("Sum = %s, %v; want %s", got, err, digest(a))
		}
	}
	if runtime.GOOS == "linux" && c.Len() != 1 {
		t.Fatalf("%d versions cached, want 1", c.Len())
	}
	// Same size, same mtime (put back by hand): only ctime tells the
	// versions apart, and it must.
	fi, _ := os.Stat(p)
	b := []byte("#!/bin/sh\necho version TWO\n")
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got, err := sum(t, c, p, 1<<20); err != nil || got != digest(b) {
		t.Fatalf("after an in-place change with the mtime put back: Sum = %s, %v; want %s", got, err, digest(b))
	}
}

func TestSumRefusesWhatItMustNotRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 4097), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sum(t, New(0), big, 4096); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
	if _, err := sum(t, New(0), dir, 4096); err == nil {
		t.Error("a directory was hashed")
	}
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("versions are cached only where files have an identity")
	}
	dir := t.TempDir()
	c := New(3)
	for i := range 5 {
		p := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(p, []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := sum(t, c, p, 10); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() > 3 {
		t.Errorf("%d versions cached, bound 3", c.Len())
	}
}
