package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/logging"
	"github.com/tillwatch/tillwatch/sensor/agent"
	"github.com/tillwatch/tillwatch/sensor/check"
	"github.com/tillwatch/tillwatch/sensor/config"
)

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tillwatch-sensor",
		Short:         "tillwatch endpoint sensor: detects and stops supply-chain attacks on tills",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCmd(stderr), checkCmd(stdout), versionCmd(stdout), kernelCmd(stdout))
	root.AddCommand(serviceCommands(stdout)...) // Windows only
	return root
}

func versionCmd(out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(out, buildinfo.String("tillwatch-sensor"))
			return nil
		},
	}
}

// flags are the command-line overrides of the config file.
type flags struct {
	config      string
	watch       []string
	rules       []string
	alertsOut   string
	mode        string
	collector   string
	enrollToken string
	ca          string
	noCollector bool
	spool       string
	stateDir    string
	hostID      string
	logLevel    string
	logFormat   string
	metrics     string
	procBackend string
	ksKeys      []string
}

func addFlags(fs *pflag.FlagSet, f *flags) {
	fs.StringVarP(&f.config, "config", "c", "", "YAML config file")
	fs.StringArrayVar(&f.watch, "watch", nil, "directory to watch for file activity (repeatable)")
	fs.StringArrayVar(&f.rules, "rules", nil, "extra rule folder on top of the built-in set (repeatable)")
	fs.StringVar(&f.alertsOut, "alerts-out", "", "also append every alert as NDJSON to FILE (- for stdout)")
	fs.StringVar(&f.mode, "mode", "", "monitor or enforce (default enforce)")
	fs.StringVar(&f.collector, "collector", "", "collector URL (https://host:port)")
	fs.StringVar(&f.enrollToken, "enroll-token", "", "file holding an enrolment token (role sensor)")
	fs.StringVar(&f.ca, "ca", "", "the collector's ca.pem to pin")
	fs.BoolVar(&f.noCollector, "no-collector", false, "run standalone: local sinks and local response only")
	fs.StringVar(&f.spool, "spool", "", "durable queue directory")
	fs.StringVar(&f.stateDir, "state-dir", "", "directory for identity, baselines and other sensor state")
	fs.StringVar(&f.hostID, "host-id", "", "override the host identity")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "", "text or json")
	fs.StringVar(&f.metrics, "metrics-listen", "", `address of the Prometheus endpoint ("" in config disables it)`)
	fs.StringVar(&f.procBackend, "process-backend", "", "auto, netlink or poll")
	fs.StringArrayVar(&f.ksKeys, "killswitch-key", nil, "responder public key (.pub) to pin for kill-switch approvals (repeatable)")
}

// load reads the config file and applies the flags that were set.
func load(cmd *cobra.Command, f *flags) (config.Config, error) {
	cfg, err := config.Load(f.config)
	if err != nil {
		return cfg, cfgfile.Usage(err)
	}
	fs := cmd.Flags()
	set := func(name string, dst *string, v string) {
		if fs.Changed(name) {
			*dst = v
		}
	}
	set("alerts-out", &cfg.AlertsOut, f.alertsOut)
	set("mode", &cfg.Mode, f.mode)
	set("collector", &cfg.Collector.URL, f.collector)
	set("enroll-token", &cfg.Collector.EnrollTokenFile, f.enrollToken)
	set("ca", &cfg.Collector.CAFile, f.ca)
	set("spool", &cfg.SpoolDir, f.spool)
	set("state-dir", &cfg.StateDir, f.stateDir)
	set("host-id", &cfg.HostID, f.hostID)
	set("log-level", &cfg.Log.Level, f.logLevel)
	set("log-format", &cfg.Log.Format, f.logFormat)
	set("metrics-listen", &cfg.Metrics.Listen, f.metrics)
	set("process-backend", &cfg.Process.Backend, f.procBackend)
	if fs.Changed("watch") {
		cfg.Watch = slices.Clone(f.watch)
	}
	if fs.Changed("rules") {
		cfg.Rules = append(cfg.Rules, f.rules...)
	}
	if fs.Changed("killswitch-key") {
		cfg.KillSwitch.Keys = append(cfg.KillSwitch.Keys, f.ksKeys...)
	}
	if f.noCollector {
		cfg.Collector.Disabled = true
	}
	return cfg, nil
}

func runCmd(stderr io.Writer) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the sensor until SIGTERM or SIGINT",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, &f)
			if err != nil {
				return err
			}
			log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return cfgfile.Usage(err)
			}
			memoryDefaults(log)
			s, err := agent.New(cfg, log)
			if err != nil {
				return err
			}
			err = s.Run(cmd.Context())
			if errors.Is(err, agent.ErrRestart) {
				return reexec()
			}
			return err
		},
	}
	addFlags(cmd.Flags(), &f)
	return cmd
}

func checkCmd(stdout io.Writer) *cobra.Command {
	var f flags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Print what this host supports; with -c FILE or run's flags, also check that config and exit non-zero if the sensor cannot run with it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, &f)
			if err != nil {
				return err
			}
			// Any config flag (or -c) means "can the sensor run like this";
			// none means only "what does this host support", which needs
			// no collector URL and so answers on a machine not yet set up.
			withConfig := false
			cmd.Flags().Visit(func(fl *pflag.Flag) { withConfig = withConfig || fl.Name != "json" })
			rep := check.Run(cfg, withConfig, slog.New(slog.DiscardHandler))
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.Print(stdout)
			}
			if withConfig && !rep.CanRun {
				return cfgfile.Usagef("the sensor cannot run here: %s", rep.Blocker)
			}
			return nil
		},
	}
	addFlags(cmd.Flags(), &f)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
