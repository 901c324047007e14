package response

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tillwatch/tillwatch/sensor/procclock"
)

// osProcesses is the real OS.
type osProcesses struct{}

// StartTime is computed exactly as the process source computes the start
// it stamps on events (sensor/procclock), so a live process always
// matches its own event and only a reused pid does not.
func (osProcesses) StartTime(pid int) (time.Time, error) {
	st, err := ReadStat("/proc", pid)
	if err != nil {
		return time.Time{}, err
	}
	boot, err := procclock.BootTime("/proc")
	if err != nil {
		return time.Time{}, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return procclock.Start(boot, st.Start), nil
}

func (osProcesses) Signal(pid int, action string) error {
	err := signal(pid, action)
	if errors.Is(err, os.ErrProcessDone) {
		return ErrGone
	}
	return err
}
