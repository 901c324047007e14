//go:build !linux

package fileactivity

import "errors"

// newFanotify: fanotify exists only on Linux.
func newFanotify(*Source) (backend, error) { return nil, errors.ErrUnsupported }
