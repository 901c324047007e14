package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	sim "github.com/tillwatch/tillwatch/sim/rmmchain"
	"github.com/tillwatch/tillwatch/sim/simdir"
)

// simulateRMMCmd is `tillwatch simulate rmm-chain --dir DIR`.
func simulateRMMCmd(out io.Writer) *cobra.Command {
	var (
		dir         string
		installPath bool
		pause, hold time.Duration
		undo        bool
	)
	cmd := &cobra.Command{
		Use:   "rmm-chain --dir DIR",
		Short: "Run the Kaseya VSA chain with harmless stand-ins: RMM agent -> renamed decoder -> decoded script run (--undo removes it)",
		Long: `Sets up, under DIR/` + sim.RootName + `, a copy of /bin/sh named as the Kaseya Linux agent (` + sim.AgentName + `),
a dropped base64 "certificate" and a procedure, then runs the procedure as the agent's child: copy base64 to ./cert,
decode the certificate into agent.sh, chmod +x it, run it. The payload only writes ` + sim.MarkerName + `.
A sensor in enforce mode kills the chain at the decode step, so the marker is never written; in monitor mode it is
written and the alerts still appear. Everything created is listed in DIR/` + sim.ManifestName + `; --undo removes
exactly that. With --install-path the agent is placed in a new subdirectory of the real ` + sim.InstallRoot + `
(recognised by install path, not only by name); --undo removes it too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return cfgfile.Usagef("--dir is required")
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return cfgfile.Usagef("--dir %s is not a directory", dir)
			}
			// System and hidden folders, and links, are refused (sim/simdir).
			if _, err := simdir.Check(dir); err != nil {
				return cfgfile.Usagef("--dir %v", err)
			}
			if undo {
				n, err := sim.Undo(dir)
				fmt.Fprintf(out, "removed %d paths the rmm-chain simulation created under %s\n", n, dir)
				return err
			}
			if pause < 0 || pause > time.Minute || hold < 0 || hold > 10*time.Second {
				return cfgfile.Usagef("--pause must be 0-1m and --hold 0-10s")
			}
			o := sim.Options{Dir: dir, Pause: pause, Hold: hold}
			if installPath {
				o.InstallRoot = sim.InstallRoot
			}
			m, err := sim.Create(o)
			if err != nil {
				return cfgfile.Usage(err)
			}
			fmt.Fprintf(out, "agent stand-in %s (%s); procedure %s\n", m.Agent, m.Product, m.Script)
			res, err := sim.Run(cmd.Context(), m, out, cmd.ErrOrStderr())
			if err != nil {
				return fmt.Errorf("%w (undo with --undo)", err)
			}
			verdict := "the chain was stopped before its payload ran (marker not written)"
			if res.MarkerWritten {
				verdict = "the payload RAN: " + m.Marker + " written; nothing stopped the chain (monitor mode, or no sensor)"
			}
			fmt.Fprintf(out, "agent pid %d, procedure status %d, %s: %s; undo with --undo\n",
				res.AgentPID, res.ProcedureStatus, res.Elapsed.Round(time.Millisecond), verdict)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to set the simulation up in (it creates "+sim.RootName+" there; system and hidden folders are refused)")
	f.BoolVar(&installPath, "install-path", false, "place the agent stand-in under the real "+sim.InstallRoot+" (a new subdirectory)")
	f.DurationVar(&pause, "pause", time.Second, "pause between the steps of the procedure")
	f.DurationVar(&hold, "hold", 500*time.Millisecond, "how long the decoder waits for its input (so the sensor sees its command line)")
	f.BoolVar(&undo, "undo", false, "remove everything the simulation created")
	return cmd
}
