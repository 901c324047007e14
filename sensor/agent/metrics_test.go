package agent

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/process"
)

// TestProcessCountersAreMetrics runs a real process source (polling /proc)
// and reads its counters from the registry, as /metrics serves them.
func TestProcessCountersAreMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	src := process.New(process.Config{Backend: process.BackendPoll, PollInterval: 50 * time.Millisecond}, nil, nil)
	cs := processMetrics(src)
	reg.MustRegister(cs...)
	for _, name := range []string{"tillwatch_process_events_total", "tillwatch_process_overflows_total", "tillwatch_process_enrich_failures_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Fatalf("%s: %d series, %v", name, n, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(event.Event) {}) }()
	defer func() { cancel(); <-done }()
	for src.Backend() == "" {
		time.Sleep(10 * time.Millisecond)
	}
	child := exec.Command("sleep", "1")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(cs[0]) == 0 { // tillwatch_process_events_total
		if time.Now().After(deadline) {
			t.Fatal("tillwatch_process_events_total stayed 0 while a process started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
