//go:build !linux

package action

import "net/netip"

// Host isolation is nftables (Linux); Windows Filtering Platform would slot
// in as isolate_windows.go.
const supportsIsolation = false

func isolationPresent() (bool, error)                     { return false, ErrUnsupported }
func applyIsolation([]netip.AddrPort, []netip.Addr) error { return ErrUnsupported }
func removeIsolation() (bool, error)                      { return false, ErrUnsupported }
