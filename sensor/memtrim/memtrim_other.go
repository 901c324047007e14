//go:build !linux

package memtrim

import "errors"

// Trim is Linux-only.
func Trim() (Stats, error) { return Stats{}, errors.ErrUnsupported }
