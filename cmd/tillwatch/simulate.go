package main

import (
	"io"

	"github.com/spf13/cobra"
)

// simulateCmd groups the attack simulators. Each simulator touches only the
// directory it is given (or paths it creates and marks), and can undo what
// it did; each lives in its own simulate_*.go file and adds itself here.
func simulateCmd(out io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run harmless attack simulations to test a deployment",
	}
	cmd.AddCommand(
		// one line per simulator, e.g. simulateRansomwareCmd(out),
		simulateRansomwareCmd(out),
		simulateFleetCmd(out),
		simulateRMMCmd(out),
	)
	return cmd
}
