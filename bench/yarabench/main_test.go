package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestShortRun keeps the benchmark from rotting: a 20-file corpus, one run
// of each scanner, the same match sets, the section written.
func TestShortRun(t *testing.T) {
	if _, err := exec.LookPath("yara"); err != nil {
		t.Skip("the yara CLI is not installed (make test-deps installs it)")
	}
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	t.Chdir("../..") // the benchmark reads rules/yara from the repository root
	if err := run(out, 20, 8<<10, 1, 2); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"## YARA", "| yara CLI |", "| tillwatch (sensor/yara sweep) |", "Match sets identical: **true**"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the section lacks %q:\n%s", want, doc)
		}
	}
}
