package procclock

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

// MonotonicToWall converts a CLOCK_MONOTONIC timestamp in ns (the proc
// connector's timestamp_ns, the eBPF programs' bpf_ktime_get_ns) to wall
// time, against both clocks read now; a time in the future is now.
func MonotonicToWall(ns uint64) time.Time {
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
