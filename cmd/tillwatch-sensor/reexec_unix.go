//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces this process with a fresh copy of the sensor (same pid,
// arguments and environment), which loads the newly installed rule bundle.
// systemd sees the same main process carry on.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart for the new rule bundle: %w", err)
	}
	return fmt.Errorf("restart for the new rule bundle: %w", syscall.Exec(exe, os.Args, os.Environ()))
}
