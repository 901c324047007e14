//go:build linux

package main

import (
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// TestShortRun keeps the benchmark from rotting: a campaign on a fleet of
// 20 simulated sensors against the real collector binary reaches every
// sensor. The figure itself is not a test (docs/benchmarks.md has the
// measured ones).
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the collector")
	}
	collector, cleanup, err := benchproc.BuildCollector()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	r, err := measure(collector, 20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.lastAck) != 1 || r.lastAck[0] <= 0 || r.lastAck[0] > 30*time.Second {
		t.Fatalf("last acknowledgement after %v", r.lastAck)
	}
}
