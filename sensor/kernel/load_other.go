//go:build !linux

package kernel

import "errors"

// Layer is the loaded kernel layer; only Linux has one.
type Layer struct{}

// Load returns errors.ErrUnsupported: the kernel layer is eBPF on Linux.
func Load(Config) (*Layer, error) { return nil, errors.ErrUnsupported }

// Release returns errors.ErrUnsupported off Linux.
func Release(string) error { return errors.ErrUnsupported }

// Feature is one thing the kernel offers (or not) to the layer.
type Feature struct {
	Name      string
	Available bool
	Detail    string
}

// Probe off Linux reports the tamper protection missing.
func Probe(string) []Feature {
	return []Feature{{Name: "tamper protection", Detail: "missing: the kernel layer is eBPF on Linux"}}
}
