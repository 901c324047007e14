package main

import (
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/demo"
)

func demoCmd(out io.Writer) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a collector, an enrolled sensor and a simulated attack on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.BinDir == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.BinDir = filepath.Dir(self)
			}
			o.Out = out
			o.PrintAlerts = printAlerts
			return demo.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.Keep, "keep", false, "leave the collector and sensor running until Ctrl-C")
	cmd.Flags().StringVar(&o.BinDir, "bin", "", "folder holding tillwatch-collector and tillwatch-sensor (default: beside this binary)")
	return cmd
}
