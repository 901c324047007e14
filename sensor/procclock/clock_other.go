//go:build !linux

package procclock

import (
	"errors"
	"time"
)

// preciseBootTime is only available on Linux; callers use btime.
func preciseBootTime() (time.Time, error) { return time.Time{}, errors.ErrUnsupported }

// MonotonicToWall off Linux: no kernel monotonic timestamps reach the
// sensor there; it answers now.
func MonotonicToWall(uint64) time.Time { return time.Now() }
