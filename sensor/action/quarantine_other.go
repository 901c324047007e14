//go:build !linux

package action

// Quarantine needs O_NOFOLLOW, device and inode identity and POSIX owners;
// built for Linux only so far.
const supportsQuarantine = false

func (e *Executor) quarantineFile(string, string) (QuarantineEntry, string, error) {
	return QuarantineEntry{}, "", ErrUnsupported
}

func (e *Executor) restoreFile(QuarantineEntry) error { return ErrUnsupported }
