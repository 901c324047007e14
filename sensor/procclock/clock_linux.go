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
