//go:build !linux

package procclock

import (
	"errors"
	"time"
)

// preciseBootTime is only available on Linux; callers use btime.
func preciseBootTime() (time.Time, error) { return time.Time{}, errors.ErrUnsupported }
