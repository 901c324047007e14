package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	sim "github.com/tillwatch/tillwatch/sim/ransomware"
	"github.com/tillwatch/tillwatch/sim/simdir"
)

// simulateRansomwareCmd is `tillwatch simulate ransomware --dir DIR`.
func simulateRansomwareCmd(out io.Writer) *cobra.Command {
	var (
		dir, mode string
		workers   int
		rate      float64
		undo      bool
		worker    int
	)
	cmd := &cobra.Command{
		Use:   "ransomware --dir DIR",
		Short: "Encrypt the files under DIR the way ransomware does (marked first; --undo restores them)",
		Args:  cobra.NoArgs,
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
				fmt.Fprintf(out, "restored %d files under %s\n", n, dir)
				return err
			}
			if !slices.Contains(sim.Modes, mode) {
				return cfgfile.Usagef("--mode %q: want one of %v", mode, sim.Modes)
			}
			if workers < 1 || workers > 256 || rate < 0 {
				return cfgfile.Usagef("--workers must be 1-256 and --rate >= 0")
			}
			if worker >= 0 { // a worker process started by the run below
				m, err := sim.Load(dir)
				if err != nil {
					return err
				}
				_, err = sim.Encrypt(dir, m, sim.Options{Mode: mode, Worker: worker, Workers: workers, Rate: rate / float64(workers)})
				return err
			}
			m, err := sim.Mark(dir)
			if err != nil {
				return cfgfile.Usage(err)
			}
			start := time.Now()
			if workers == 1 {
				n, err := sim.Encrypt(dir, m, sim.Options{Mode: mode, Workers: 1, Rate: rate})
				fmt.Fprintf(out, "encrypted %d of %d files under %s in %s (mode %s); undo with --undo\n", n, len(m.Files), dir, time.Since(start).Round(time.Millisecond), mode)
				return err
			}
			// Workers are separate processes (re-executions of this binary),
			// as encryptors fork them: the sensor must score them as one tree.
			self, err := os.Executable()
			if err != nil {
				return err
			}
			var procs []*exec.Cmd
			for w := range workers {
				c := exec.Command(self, "simulate", "ransomware", "--dir", dir, "--mode", mode, "--workers", strconv.Itoa(workers),
					"--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--worker", strconv.Itoa(w))
				c.Stdout, c.Stderr = out, cmd.ErrOrStderr()
				if err := c.Start(); err != nil {
					return err
				}
				procs = append(procs, c)
			}
			var failed int
			for _, c := range procs {
				if c.Wait() != nil {
					failed++
				}
			}
			fmt.Fprintf(out, "%d workers over %d files under %s in %s (mode %s), %d stopped or failed; undo with --undo\n",
				workers, len(m.Files), dir, time.Since(start).Round(time.Millisecond), mode, failed)
			if failed > 0 {
				return fmt.Errorf("%d of %d workers did not finish", failed, workers)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to encrypt (only files marked under it are touched; system and hidden folders are refused)")
	f.StringVar(&mode, "mode", sim.ModeInPlace, "inplace | rename | newdelete | intermittent | striped")
	f.IntVar(&workers, "workers", 1, "worker processes")
	f.Float64Var(&rate, "rate", 0, "files per second over all workers (0: as fast as possible)")
	f.BoolVar(&undo, "undo", false, "restore every marked file and remove the markers")
	f.IntVar(&worker, "worker", -1, "internal: run as worker N")
	_ = f.MarkHidden("worker")
	return cmd
}
