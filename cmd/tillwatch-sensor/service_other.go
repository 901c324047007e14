//go:build !windows

package main

import (
	"io"

	"github.com/spf13/cobra"
)

// runService reports that this process is not a Windows service: on Linux
// systemd runs the ordinary command line (sensor/deploy/tillwatch-sensor.service).
func runService([]string) (code int, ok bool) { return 0, false }

// serviceCommands: `service install|uninstall` exist only on Windows.
func serviceCommands(io.Writer) []*cobra.Command { return nil }
