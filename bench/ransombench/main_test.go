//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// TestShortRun keeps the benchmark from rotting: the real program, the real
// CLI and sensor, one mode and one adaptive behaviour (a family of one-file
// workers), one run of each speed and worker count with decoys on, and the
// section it writes. (It broke once unnoticed when the
// sensor's name group moved to a filesystem mark and the readiness check
// still counted a mark per folder.)
func TestShortRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (fanotify permission events, kill, a PID namespace); CI runs as root")
	}
	t.Cleanup(benchproc.KeepNoKernelPins())
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch", "github.com/tillwatch/tillwatch/cmd/tillwatch-sensor",
		"github.com/tillwatch/tillwatch/bench/ransombench"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	cmd := exec.Command(filepath.Join(bin, "ransombench"), "-bin", bin, "-out", out, "-runs", "1", "-modes", "inplace", "-adaptive", "family",
		"-files", "300", "-decoys", "on", "-no-benign")
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ransombench: %v\n%s", err, log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"## Ransomware: files lost", "### inplace", "| on | full speed | 1 |", "| on | 400 files/s | 4 |",
		"### Adaptive behaviours", "| family |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the section lacks %q:\n%s", want, doc)
		}
	}
	if !strings.Contains(string(log), "stopped true") {
		t.Errorf("no run was stopped:\n%s", log)
	}
}

// TestShortRunHost runs the host placement with the kernel's tripwires
// armed and no permission events (files.open_permission unless-kernel):
// the section of its own, the sensor's mode read from its log, every run
// stopped, and nothing left behind (pins, stopped processes of its own).
func TestShortRunHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (fanotify, the kernel layer, kill); CI runs as root")
	}
	if ns, err := os.Readlink("/proc/self/ns/pid"); err != nil || ns != initPIDNamespace {
		t.Skip("not in the host's PID namespace")
	}
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch", "github.com/tillwatch/tillwatch/cmd/tillwatch-sensor",
		"github.com/tillwatch/tillwatch/bench/ransombench"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	cmd := exec.Command(filepath.Join(bin, "ransombench"), "-bin", bin, "-out", out, "-runs", "1", "-modes", "inplace", "-adaptive", "none",
		"-files", "300", "-decoys", "on", "-no-benign", "-placement", "host", "-open-permission", "unless-kernel")
	log, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(log), "kernel.mode required") {
			t.Skipf("the kernel layer does not load here: %s", log)
		}
		t.Fatalf("ransombench: %v\n%s", err, log)
	}
	if pins, _ := filepath.Glob(fmt.Sprintf("%s%d-*", pinPrefix, cmd.Process.Pid)); len(pins) > 0 {
		t.Errorf("pins left behind: %v", pins)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"## Ransomware: files lost, kernel guard armed (open_permission: unless-kernel)", "### inplace", "| on | full speed | 4 |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the section lacks %q:\n%s", want, doc)
		}
	}
	if n := strings.Count(string(log), "stopped true"); n != 4 {
		t.Errorf("%d of 4 runs stopped:\n%s", n, log)
	}
	if strings.Contains(string(log), "permission events on") {
		t.Errorf("a decoys-on run kept its permission events under unless-kernel:\n%s", log)
	}
	if strings.Contains(string(log), "of this benchmark was left stopped") {
		t.Errorf("processes left stopped:\n%s", log)
	}
}
