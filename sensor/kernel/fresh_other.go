//go:build !linux

package kernel

import (
	"errors"
	"time"
)

// confirmFresh confirms nothing off Linux: there is no kernel layer.
func confirmFresh(string, int, string, uint64, time.Time) (string, string, bool) {
	return "", "", false
}

// resume returns errors.ErrUnsupported off Linux.
func resume(int) error { return errors.ErrUnsupported }

// childrenIn finds nothing off Linux.
func childrenIn(string) map[int][]int { return nil }
