//go:build linux

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// TestShortRun keeps the benchmark from rotting: a real sensor, a tiny
// folder, a few seconds of samples.
func TestShortRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (process connector, fanotify); CI runs as root")
	}
	t.Cleanup(benchproc.KeepNoKernelPins())
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch-sensor"); err != nil {
		t.Fatal(err)
	}
	o := Options{Sensor: filepath.Join(bin, "tillwatch-sensor"), Window: 3 * time.Second, Warmup: 500 * time.Millisecond,
		Interval: 250 * time.Millisecond, Files: 40}
	r, err := Measure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("median RSS %s, max %s, CPU %.2f%% over %s (%d samples)", benchproc.MiB(r.MedianRSS), benchproc.MiB(r.MaxRSS), r.CPUPercent, r.Window, r.Samples)
	if r.Samples < 5 || r.MedianRSS < 1<<20 || r.MaxRSS < r.MedianRSS || r.CPUPercent < 0 || r.CPUPercent > 200 {
		t.Fatalf("implausible result %+v", r)
	}
	if r.Files != 40 || r.Dirs != 11 || r.Backend == "?" {
		t.Fatalf("setup %+v", r)
	}
	if s := report([]placement{{"host", r}}, o); !strings.HasPrefix(s, heading+"\n") || !strings.Contains(s, "| **RSS, median** (VmRSS) |") {
		t.Fatalf("report:\n%s", s)
	}
}
