package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// kernelCmd is the operator's way out of the kernel layer: `kernel release`
// detaches every tripwire and removes the pins, for a sensor that will not
// start or a host being decommissioned. Run it as root, after stopping the
// sensor (a running sensor re-arms at its next start).
func kernelCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "kernel", Short: "Manage the eBPF kernel layer (tripwires pinned in bpffs)"}
	var pinDir string
	release := &cobra.Command{
		Use:   "release",
		Short: "Detach every kernel tripwire and remove its pins (the way out; see docs/kernel.md)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := (kernel.Config{PinDir: pinDir}).Validate(); err != nil {
				return err
			}
			if err := kernel.Release(pinDir); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "kernel tripwires released: %s removed\n", pinDir)
			return nil
		},
	}
	release.Flags().StringVar(&pinDir, "pin-dir", kernel.DefaultPinDir, "the bpffs directory of the pins (kernel.pin_dir)")
	cmd.AddCommand(release)
	return cmd
}
