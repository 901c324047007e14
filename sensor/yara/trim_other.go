//go:build cgo && !linux

package yara

// releaseCHeap: nothing to give back without glibc.
func releaseCHeap() {}
