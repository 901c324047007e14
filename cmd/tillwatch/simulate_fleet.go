package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/sensor/identity"
	"github.com/tillwatch/tillwatch/sim/fleet"
)

// simulateFleetCmd runs many simulated sensors against a collector: a load
// and reliability tool, it touches nothing on this machine but the network.
func simulateFleetCmd(out io.Writer) *cobra.Command {
	var (
		o         fleet.Options
		tokenFile string
		duration  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Simulate N sensors (enrol, heartbeat, alerts) against a collector, then print what was confirmed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.URL == "" || o.CAFile == "" || tokenFile == "" {
				return cfgfile.Usagef("--collector, --ca and --enroll-token are required")
			}
			tok, err := identity.ReadToken(tokenFile)
			if err != nil {
				return cfgfile.Usage(err)
			}
			o.EnrollToken = tok
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			start := time.Now()
			f, err := fleet.Start(ctx, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%d sensors enrolled in %s\n", f.Stats().Enrolled, time.Since(start).Round(time.Millisecond))
			tick := time.NewTicker(5 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					f.Wait()
					st := f.Stats()
					fmt.Fprintf(out, "final: %+v\n", st)
					return nil
				case <-tick.C:
					fmt.Fprintf(out, "%s %+v\n", time.Since(start).Round(time.Second), f.Stats())
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.URL, "collector", os.Getenv("TILLWATCH_COLLECTOR"), "collector URL")
	fl.StringVar(&o.CAFile, "ca", os.Getenv("TILLWATCH_CA"), "the collector's ca.pem")
	fl.StringVar(&tokenFile, "enroll-token", "", "file holding an enrolment token (role sensor)")
	fl.IntVar(&o.Sensors, "sensors", 100, "number of simulated sensors")
	fl.StringVar(&o.HostPrefix, "host-prefix", "sim", "host ids are <prefix>-<n>")
	fl.DurationVar(&o.AlertInterval, "alert-interval", 10*time.Second, "mean time between alerts of one sensor (0: none)")
	fl.IntVar(&o.AlertsPerSensor, "alerts-per-sensor", 0, "stop each sensor's alerts after this many (0: no limit)")
	fl.DurationVar(&o.HeartbeatInterval, "heartbeat", 30*time.Second, "heartbeat interval")
	fl.DurationVar(&duration, "duration", time.Minute, "how long to run (0: until Ctrl-C)")
	return cmd
}
