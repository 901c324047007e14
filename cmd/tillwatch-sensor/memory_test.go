package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"testing"
)

// TestMemoryDefaults: the sensor's GOGC applies unless the environment
// sets one. Not parallel: it changes the process's GC setting and env.
func TestMemoryDefaults(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	t.Setenv("GOGC", "80") // restored after the test
	memoryDefaults(log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set in the environment: GC percent %d, want it left alone (100)", got)
	}
	os.Unsetenv("GOGC")
	memoryDefaults(log)
	if got := debug.SetGCPercent(100); got != sensorGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, sensorGCPercent)
	}
}
