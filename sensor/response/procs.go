package response

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shirou/gopsutil/v3/process"
)

// osProcesses is the real OS.
type osProcesses struct{}

func (osProcesses) StartTime(pid int) (time.Time, error) {
	p, err := process.NewProcess(int32(pid))
	if err != nil {
		return time.Time{}, ErrGone
	}
	ms, err := p.CreateTime()
	if err != nil {
		return time.Time{}, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return time.UnixMilli(ms), nil
}

func (osProcesses) Signal(pid int, action string) error {
	err := signal(pid, action)
	if errors.Is(err, os.ErrProcessDone) {
		return ErrGone
	}
	return err
}
