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

// TestShortRun keeps the benchmark from rotting: a real sensor, a tar of a
// few hundred files, a few dozen execs, one run each way.
func TestShortRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (process connector, fanotify); CI runs as root")
	}
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch-sensor"); err != nil {
		t.Fatal(err)
	}
	o := Options{Sensor: filepath.Join(bin, "tillwatch-sensor"), Files: 300, Execs: 30, Runs: 1, Settle: 200 * time.Millisecond}
	r, err := Measure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Phases) != 4 || r.TarFiles != 300 {
		t.Fatalf("result %+v", r)
	}
	for _, p := range r.Phases {
		t.Logf("%s: without %v with %v ratio %.2f", p.Name, p.Without, p.With, p.Ratio())
		if len(p.Without) != 1 || len(p.With) != 1 || p.Ratio() <= 0 {
			t.Fatalf("phase %+v", p)
		}
	}
	// The sensor saw the storm: at least one file event per extracted file.
	var files float64
	for _, d := range r.Seen {
		if strings.HasPrefix(d.Series, "tillwatch_file_events_total") {
			files += d.Delta
		}
	}
	if files < 300 {
		t.Fatalf("the sensor saw %v file events of a 300-file storm: %+v", files, r.Seen)
	}
	if s := report(r, o, "?", "?"); !strings.HasPrefix(s, heading+"\n") || !strings.Contains(s, "| **file storm** |") {
		t.Fatalf("report:\n%s", s)
	}
}
