//go:build !linux

package yara

import (
	"errors"
	"fmt"
)

// openForScan is Linux-only; elsewhere sweeps scan file by file.
func openForScan(p string, _ []byte) (int, int64, uint32, int, error) {
	return -1, 0, 0, 0, fmt.Errorf("%s: batch open: %w", p, errors.ErrUnsupported)
}

func closeScanned(int) {}
