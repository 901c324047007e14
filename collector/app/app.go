// Package app is tillwatch-collector's command line: it parses flags over
// the config file, wires the PKI, store and server together and runs them.
// cmd/tillwatch-collector only calls Main, so all of this is testable.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/console"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/cli"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Name is the binary name used in messages.
const Name = "tillwatch-collector"

// Main runs the command line with args (without the program name) and
// returns the exit code. SIGINT and SIGTERM stop `run` gracefully.
func Main(args []string, stdout, stderr io.Writer) int {
	return cli.Main(Name, newRoot(stdout, stderr), args, stderr)
}

// Execute runs the command line with ctx; it is Main without the signal
// handling and exit code mapping.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, newRoot(stdout, stderr), args)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   Name,
		Short: "tillwatch collector: receives, stores and serves alerts from tillwatch sensors",
		Long: `tillwatch-collector receives alert and telemetry batches from tillwatch sensors over HTTPS,
stores them (embedded SQLite by default) and serves them to analysts.

Start it with "tillwatch-collector run"; create an enrolment token for sensors with
"tillwatch-collector token create --role sensor". Sensors and the CLI pin <data dir>/ca.pem.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Args stays nil: cobra then reports an unknown subcommand as an
		// error instead of printing help and exiting 0.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cfgfile.Usage(err) })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newRun(stderr), newToken(stdout), newVersion(stdout))
	return root
}

// common holds the flags every subcommand that opens the store takes, so
// whatever reaches a store in `run` reaches the same one in `token create`
// (and any subcommand registered the same way).
type common struct {
	configFile string
	dataDir    string
	store      string
	es         string
}

// register adds the config, data dir and store flags to cmd. Every
// subcommand that opens the store calls it and loads its config with load.
func (c *common) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&c.configFile, "config", "c", "", "YAML config file")
	cmd.Flags().StringVar(&c.dataDir, "data", "", "data dir for the CA, certificates and database (default "+config.DefaultDataDir+")")
	cmd.Flags().StringVar(&c.store, "store", "", "store URL sqlite:PATH (default sqlite:<data>/"+config.DBFile+")")
	cmd.Flags().StringVar(&c.es, "elasticsearch", "", "store into the Elasticsearch cluster at URL instead of SQLite")
	cmd.MarkFlagsMutuallyExclusive("store", "elasticsearch")
}

// load reads the config file (if any) and applies the flags set on cmd.
func (c *common) load(cmd *cobra.Command) (config.Config, error) {
	cfg := config.Default()
	if c.configFile != "" {
		var err error
		if cfg, err = config.Load(c.configFile); err != nil {
			return config.Config{}, err
		}
	}
	if cmd.Flags().Changed("data") {
		cfg.DataDir = c.dataDir
	}
	// Either flag picks the backend over the config file's.
	if cmd.Flags().Changed("store") {
		cfg.Store = c.store
		cfg.Elasticsearch = ""
	}
	if cmd.Flags().Changed("elasticsearch") {
		cfg.Elasticsearch = c.es
		cfg.Store = ""
	}
	return cfg, nil
}

func validate(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return cfgfile.Usage(err)
	}
	return nil
}

func newRun(stderr io.Writer) *cobra.Command {
	var (
		cm     common
		listen string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "serve the collector API over HTTPS",
		Args:  cobra.NoArgs,
	}
	cm.register(cmd)
	cmd.Flags().StringVar(&listen, "listen", "", "HTTPS listen address (default "+config.DefaultListen+")")
	var signingKey string
	cmd.Flags().StringVar(&signingKey, "signing-key", "", "kill-switch signing key (default <data>/"+config.SigningKeyFile+", created on first start)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cm.load(cmd)
		if err != nil {
			return err
		}
		if cmd.Flags().Changed("listen") {
			cfg.Listen = listen
		}
		if cmd.Flags().Changed("signing-key") {
			cfg.KillSwitch.SigningKey = signingKey
		}
		if err := validate(cfg); err != nil {
			return err
		}
		return Run(cmd.Context(), cfg, newLogger(stderr, cfg.Log))
	}
	return cmd
}

// newLogger builds the stderr logger; the config was validated.
func newLogger(w io.Writer, lc config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(lc.Level))
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Run starts the collector with a validated cfg and serves until ctx ends.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log = log.With(logkey.Component, "collector")
	bundle, err := pki.Ensure(cfg.DataDir, pki.Options{ExtraNames: cfg.TLS.ExtraSANs, Logger: log})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	st, storeName, err := openStore(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := recordStore(cfg); err != nil {
		return err
	}
	rulesSource, err := newRulesSource(cfg.RulesBundle)
	if err != nil {
		return err
	}
	var srv *server.Server
	cmds, err := newCommandService(cfg, st, log, func() { srv.NotifyCommands() })
	if err != nil {
		return err
	}
	con, err := console.New(console.Options{Store: st, Roles: server.RoleTable(), SilenceAfter: cfg.SilenceAfter, Logger: log})
	if err != nil {
		return err
	}
	camp := campaign.New(campaign.Options{
		Policy: campaign.Policy{
			Hosts: cfg.Campaign.Hosts, Window: cfg.Campaign.Window, MinSeverity: cfg.Campaign.MinSeverity,
			Action: cfg.Campaign.Action, Targets: campaignTargets(cfg.Campaign), DryRun: cfg.Campaign.DryRun,
			Product: cfg.Campaign.RMMProduct,
		},
		Store: st, Issuer: cmds, Log: log,
	})
	srv, err = server.New(server.Options{
		Console:           con.Handler,
		Store:             st,
		Logger:            log,
		Registry:          reg,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Commands:          cmds,
		Rules:             rulesSource,
		Observer:          server.Observers{con, camp},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another collector running? change listen or --listen)", cfg.Listen, err)
	}
	log.Info("collector listening",
		logkey.Addr, ln.Addr().String(),
		logkey.DataDir, cfg.DataDir,
		logkey.CAFile, bundle.CAPath,
		logkey.Store, storeName,
		"console", "https://"+ln.Addr().String()+console.Prefix,
		"version", buildinfo.Version)
	// Silenced sensors are found by every collector; derived alert ids make
	// the alert exist once however many collectors share the store.
	// A sensor silenced after an RMM alert counts toward that alert's
	// campaign: the fleet response starts even when a till is lost.
	go watchdog.Run(ctx, st, watchdog.Options{SilenceAfter: cfg.SilenceAfter, Log: log,
		OnSilenced: func(ctx context.Context, h api.Host) { camp.HostLost(ctx, h.HostID, h.LastSeen) }})
	// The server certificate renews while running; handshakes read it
	// through GetCertificate.
	go bundle.Run(ctx)
	if err := srv.Serve(ctx, ln, bundle.TLSConfig()); err != nil {
		return err
	}
	log.Info("collector stopped")
	return nil
}

func newVersion(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, buildinfo.String(Name))
			return err
		},
	}
}
