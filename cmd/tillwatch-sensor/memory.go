package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// sensorGCPercent is the sensor's GOGC unless the environment sets one. An
// idle sensor's live Go heap is a few MB; with Go's default of 100 the heap
// grows to twice that between collections, and those pages stay resident.
// At 50 the idle sensor's anonymous memory measured 1.5 to 4 MB lower
// (docs/benchmarks.md, "Sensor footprint (idle)"); the price is collections twice
// as often, on a heap that small a negligible CPU cost.
const sensorGCPercent = 50

// memoryDefaults applies sensorGCPercent when GOGC is not set, so that an
// operator's GOGC (e.g. in a systemd drop-in) still wins.
func memoryDefaults(log *slog.Logger) {
	if _, set := os.LookupEnv("GOGC"); set {
		log.Debug("GOGC from the environment", "GOGC", os.Getenv("GOGC"))
		return
	}
	debug.SetGCPercent(sensorGCPercent)
}
