//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestShortRun keeps the benchmark from rotting: a 20-file corpus, two
// rounds of each scanner, the scan command on 30 files, the same match
// sets, the section written.
func TestShortRun(t *testing.T) {
	if _, err := exec.LookPath("yara"); err != nil {
		t.Skip("the yara CLI is not installed (make test-deps installs it)")
	}
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	bin := filepath.Join(t.TempDir(), "tillwatch")
	t.Chdir("../..") // the benchmark reads rules/yara from the repository root
	if o, err := exec.Command("go", "build", "-o", bin, "./cmd/tillwatch").CombinedOutput(); err != nil {
		t.Fatalf("build tillwatch: %v\n%s", err, o)
	}
	if err := run(out, 20, 8<<10, 1, 2, scanConfig{files: 30, bin: bin, baseline: bin}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"## YARA", "| yara CLI |", "| tillwatch sweep, batched |", "| tillwatch sweep, file by file (before) |",
		"### The scan command against the CLI", "| tillwatch scan, cold cache (compiles) |", "| tillwatch scan, warm cache |", "| before: ",
		"Match sets identical (CLI, batched, file by file): **true**", "Match sets identical: **true**"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the section lacks %q:\n%s", want, doc)
		}
	}
}
