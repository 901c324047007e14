//go:build !linux

package canary

import "errors"

func lstatID(string) (fileID, bool) { return fileID{}, false }

// Judge needs /proc: off Linux it never confirms a decoy (the kernel
// tripwire that asks for it is Linux only).
func (s *Set) Judge(string, int, string) (bool, string) {
	return false, errors.ErrUnsupported.Error()
}
