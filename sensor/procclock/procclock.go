// Package procclock turns /proc start times into wall-clock times, the one
// way every part of the sensor does it. Process identity across pid reuse
// rests on it: the process source stamps a start time on each process, and
// the responder and the kill-switch compare it with /proc before they
// signal, so all of them must compute it alike and precisely.
package procclock

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// UserHZ is the unit of /proc/<pid>/stat times: USER_HZ, fixed at 100 by
// the kernel's ABI on every architecture Linux supports.
const UserHZ = 100

// BootTime returns when the machine whose procfs is at root booted. The
// btime line of root/stat is whole seconds, which would put start times up
// to a second early (gopsutil's CreateTime has that error) and make them
// disagree with the proc connector's nanosecond fork times; so when this
// host's CLOCK_BOOTTIME agrees with btime (root is this kernel's procfs,
// not a fixture), the precise value is used.
func BootTime(root string) (time.Time, error) {
	bt, err := readBootTime(root)
	if err != nil {
		return time.Time{}, err
	}
	if precise, err := preciseBootTime(); err == nil {
		if d := precise.Sub(bt); d >= -time.Second && d <= 2*time.Second {
			return precise, nil
		}
	}
	return bt, nil
}

// Tolerance is how far two start times of one process may differ and still
// name the same process: a start stamped from the proc connector's fork
// time and one read from /proc differ by the tick rounding and the fork to
// exec gap, far less than this; a reused pid starts later by much more.
const Tolerance = 1500 * time.Millisecond

// SameStart reports whether a and b are the start of the same process.
func SameStart(a, b time.Time) bool {
	d := a.Sub(b)
	return d <= Tolerance && d >= -Tolerance
}

// Start is the wall-clock start of a process whose /proc/<pid>/stat
// starttime is ticks, on a machine that booted at boot.
func Start(boot time.Time, ticks uint64) time.Time {
	return boot.Add(time.Duration(ticks) * (time.Second / UserHZ))
}

// readBootTime reads btime (whole seconds) from root/stat.
func readBootTime(root string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(root, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("%s/stat btime: %w", root, err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s/stat: no btime line", root)
}
