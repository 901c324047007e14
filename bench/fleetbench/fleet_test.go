//go:build linux

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// TestShortRun keeps the benchmark from rotting: the real collector, 50
// simulated sensors heartbeating every second, a 3-second window.
func TestShortRun(t *testing.T) {
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch-collector"); err != nil {
		t.Fatal(err)
	}
	o := Options{Collector: filepath.Join(bin, "tillwatch-collector"), Sensors: 50, Window: 3 * time.Second,
		Heartbeat: time.Second, Settle: 1500 * time.Millisecond, Interval: 250 * time.Millisecond}
	r, err := Measure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sensors enrolled in %s; collector RSS %s, CPU %.1f%%; %d heartbeats, %d failed; probe p50 %s",
		r.Enrolled, r.EnrolIn, benchproc.MiB(r.Collector.MaxRSS), r.Collector.CPUPercent, r.Heartbeats, r.HeartbeatErrors, pct(r.Probe, 50))
	if r.Sensors != 50 || r.Enrolled != 50 || r.EnrolErrors != 0 {
		t.Fatalf("enrolment: %+v", r)
	}
	// 50 sensors at 1/s over 3s: about 150; the bound leaves room for a slow machine.
	if r.Heartbeats < 50 || r.HeartbeatErrors != 0 || len(r.Probe) == 0 {
		t.Fatalf("heartbeats: %d answered, %d failed, %d probes", r.Heartbeats, r.HeartbeatErrors, len(r.Probe))
	}
	if r.Collector.MedianRSS < 1<<20 || r.Collector.CPUPercent <= 0 || r.CollectorFDs < 50 {
		t.Fatalf("collector: %+v, %d descriptors", r.Collector, r.CollectorFDs)
	}
	if s := report(r, o, "?", "?"); !strings.HasPrefix(s, heading+"\n") || !strings.Contains(s, "| heartbeats answered in the window |") {
		t.Fatalf("report:\n%s", s)
	}
}
