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
	"os"
	"strconv"
	"strings"
	"time"

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

// common holds the flags shared by run and token create.
type common struct {
	configFile string
	dataDir    string
	store      string
}

func (c *common) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&c.configFile, "config", "c", "", "YAML config file")
	cmd.Flags().StringVar(&c.dataDir, "data", "", "data dir for the CA, certificates and database (default "+config.DefaultDataDir+")")
	cmd.Flags().StringVar(&c.store, "store", "", "store URL sqlite:PATH (default sqlite:<data>/"+config.DBFile+")")
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
	if cmd.Flags().Changed("store") {
		cfg.Store = c.store
		cfg.Elasticsearch = "" // the flag picks the backend
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
		es     string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "serve the collector API over HTTPS",
		Args:  cobra.NoArgs,
	}
	cm.register(cmd)
	cmd.Flags().StringVar(&listen, "listen", "", "HTTPS listen address (default "+config.DefaultListen+")")
	cmd.Flags().StringVar(&es, "elasticsearch", "", "store into the Elasticsearch cluster at URL instead of SQLite")
	var signingKey string
	cmd.Flags().StringVar(&signingKey, "signing-key", "", "kill-switch signing key (default <data>/"+config.SigningKeyFile+", created on first start)")
	cmd.MarkFlagsMutuallyExclusive("store", "elasticsearch")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cm.load(cmd)
		if err != nil {
			return err
		}
		if cmd.Flags().Changed("listen") {
			cfg.Listen = listen
		}
		if cmd.Flags().Changed("elasticsearch") {
			cfg.Elasticsearch = es
			cfg.Store = ""
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
	srv, err = server.New(server.Options{
		Console:           con.Handler,
		Store:             st,
		Logger:            log,
		Registry:          reg,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Commands:          cmds,
		Rules:             rulesSource,
		Observer: campaign.New(campaign.Options{
			Policy: campaign.Policy{
				Hosts: cfg.Campaign.Hosts, Window: cfg.Campaign.Window, MinSeverity: cfg.Campaign.MinSeverity,
				Action: cfg.Campaign.Action, Targets: campaignTargets(cfg.Campaign), DryRun: cfg.Campaign.DryRun,
				Product: cfg.Campaign.RMMProduct,
			},
			Store: st, Issuer: cmds, Log: log,
		}),
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
	go watchdog.Run(ctx, st, watchdog.Options{SilenceAfter: cfg.SilenceAfter, Log: log})
	if err := srv.Serve(ctx, ln, bundle.TLSConfig()); err != nil {
		return err
	}
	log.Info("collector stopped")
	return nil
}

func newToken(stdout io.Writer) *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "manage API tokens",
		Args:  cobra.NoArgs,
	}
	var (
		cm   common
		role string
		ttl  string
	)
	create := &cobra.Command{
		Use:   "create --role sensor|analyst|responder [--ttl DURATION]",
		Short: "create a token and print it (the only time it is shown)",
		Long: `Create a token and print it on one line. Roles:
  sensor     enrolment token: sensors use it once to enrol and get their own credential
  analyst    read alerts and hosts
  responder  analyst plus kill-switch commands

With --ttl the token stops working that long after creation (requests with
it are then answered 401 "token expired"); without it, it never expires.
Agent credentials issued at enrolment never expire, whatever the enrolment
token's --ttl.`,
		Args: cobra.NoArgs,
	}
	cm.register(create)
	create.Flags().StringVar(&role, "role", "", "sensor, analyst or responder (required)")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 30m, 12h, 7d (1m to 5y; default: never expires)")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		switch role {
		case api.RoleSensor, api.RoleAnalyst, api.RoleResponder:
		case "":
			return cfgfile.Usagef("--role is required: sensor, analyst or responder")
		default:
			return cfgfile.Usagef("--role %q must be sensor, analyst or responder (agent credentials are issued at enrolment)", role)
		}
		var expires time.Time
		if cmd.Flags().Changed("ttl") {
			d, err := parseTTL(ttl)
			if err != nil {
				return err
			}
			expires = time.Now().Add(d)
		}
		cfg, err := cm.load(cmd)
		if err != nil {
			return err
		}
		if err := validate(cfg); err != nil {
			return err
		}
		// Created here if the collector never ran, so tokens can be made
		// before first start; 0700 like pki does.
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		st, _, err := openStore(cmd.Context(), cfg, nil, nil)
		if err != nil {
			return err
		}
		defer st.Close()
		t, err := st.CreateToken(cmd.Context(), role, "", expires)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, t)
		return err
	}
	tok.AddCommand(create)
	return tok
}

// Token lifetimes --ttl accepts.
const (
	MinTokenTTL = time.Minute
	MaxTokenTTL = 5 * 8766 * time.Hour // 5 years of 365.25 days
)

// parseTTL reads --ttl: a Go duration (90m, 12h) or a number of days (7d)
// or years (1y), between MinTokenTTL and MaxTokenTTL.
func parseTTL(v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	var (
		d   time.Duration
		err error
	)
	if n, unit, ok := cutUnit(s); ok {
		// Clamp before converting: a huge float would overflow into any
		// duration at all.
		switch {
		case n < 0:
			d = -1
		case n > float64(MaxTokenTTL/unit)+1:
			d = MaxTokenTTL + 1
		default:
			d = time.Duration(n * float64(unit))
		}
	} else {
		d, err = time.ParseDuration(s)
	}
	switch {
	case err != nil || s == "":
		return 0, cfgfile.Usagef("--ttl %q is not a duration (e.g. 30m, 12h, 7d, 1y)", v)
	case d <= 0:
		return 0, cfgfile.Usagef("--ttl %q must be positive (leave it out for a token that never expires)", v)
	case d < MinTokenTTL:
		return 0, cfgfile.Usagef("--ttl %q is shorter than the minimum of 1m", v)
	case d > MaxTokenTTL:
		return 0, cfgfile.Usagef("--ttl %q is longer than the maximum of 5y (%v)", v, MaxTokenTTL)
	}
	return d, nil
}

// cutUnit parses "<number>d" (days) and "<number>y" (years of 365.25 days).
func cutUnit(s string) (n float64, unit time.Duration, ok bool) {
	for suffix, u := range map[string]time.Duration{"d": 24 * time.Hour, "y": 8766 * time.Hour} {
		num, found := strings.CutSuffix(s, suffix)
		if !found {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || num == "" || strings.ContainsAny(num, "eExXpPiInN_") {
			return 0, 0, false
		}
		return f, u, true
	}
	return 0, 0, false
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
