//go:build unix

package response

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/tillwatch/tillwatch/internal/event"
)

func signal(pid int, action string) error {
	sig := syscall.SIGKILL
	if action == event.ActionSuspend {
		// SIGSTOP cannot be caught or ignored: the process freezes where it
		// is, so a decision can follow without it doing more damage.
		sig = syscall.SIGSTOP
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return ErrGone
		}
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}
