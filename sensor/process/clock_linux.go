package process

import (
	"time"

	"golang.org/x/sys/unix"
)

// preciseBootTime derives the boot time from CLOCK_BOOTTIME, the clock
// /proc/<pid>/stat start times count from, to the nanosecond.
func preciseBootTime() (time.Time, error) {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, err
	}
	return now.Add(-time.Duration(ts.Nano())), nil
}

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
