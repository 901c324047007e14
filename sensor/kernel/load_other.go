//go:build !linux

package kernel

import "errors"

// Layer is the loaded kernel layer; only Linux has one.
type Layer struct{}

// Load returns errors.ErrUnsupported: the kernel layer is eBPF on Linux.
func Load(Config) (*Layer, error) { return nil, errors.ErrUnsupported }

// Release returns errors.ErrUnsupported off Linux.
func Release(string) error { return errors.ErrUnsupported }
