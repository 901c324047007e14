//go:build !linux

package process

import (
	"errors"
	"time"
)

// preciseBootTime is only available on Linux; callers use btime.
func preciseBootTime() (time.Time, error) { return time.Time{}, errors.ErrUnsupported }
