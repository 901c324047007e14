package process

import (
	"time"

	"golang.org/x/sys/unix"
)

// monoToWall converts a CLOCK_MONOTONIC timestamp (the proc connector's
// timestamp_ns) to wall-clock time.
func monoToWall(ns uint64) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	if d := ts.Nano() - int64(ns); d > 0 {
		return now.Add(-time.Duration(d))
	}
	return now
}
