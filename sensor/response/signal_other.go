//go:build !unix

package response

import (
	"fmt"
	"os"

	"github.com/tillwatch/tillwatch/internal/event"
)

func signal(pid int, action string) error {
	if action == event.ActionSuspend {
		// Suspending a whole process needs NtSuspendProcess on Windows;
		// designed, not built yet.
		return fmt.Errorf("suspend: %w", errUnsupported)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return ErrGone
	}
	return p.Kill()
}
