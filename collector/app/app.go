// Package app is tillwatch-collector's command line: it parses flags over
// the config file, wires the PKI, store and server together and runs them.
// cmd/tillwatch-collector only calls Main, so all of this is testable.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/console"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store"
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
		Observer:          camp,
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

// Default token lifetimes and uses: every token expires unless an
// operator says --ttl never.
const (
	// DefaultEnrolTTL is a fleet enrolment token's life: a rollout week.
	DefaultEnrolTTL = 7 * 24 * time.Hour
	// DefaultEnrolUses bounds the enrolments of a fleet token; a
	// host-specific token (--host) defaults to one.
	DefaultEnrolUses = 100
	// DefaultUserTTL is an analyst or responder token's life.
	DefaultUserTTL = 90 * 24 * time.Hour
)

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
		uses int
		host string
	)
	create := &cobra.Command{
		Use:   "create --role sensor|analyst|responder [--ttl DURATION|never] [--uses N] [--host HOST]",
		Short: "create a token and print it (the only time it is shown)",
		Long: `Create a token and print it on one line. Roles:
  sensor     enrolment token: sensors use it once to enrol and get their own credential
  analyst    read alerts and hosts
  responder  analyst plus kill-switch commands

Every token expires: sensor tokens after 7d, analyst and responder tokens
after 90d, unless --ttl says otherwise (--ttl never: no expiry). Requests
with an expired token are answered 401 "token expired".

A sensor token enrols at most --uses hosts (default 100; 0: no bound).
With --host it enrols only that host, once by default, and may replace the
host key the host id is bound to: the way to enrol a reinstalled till.

Agent credentials issued at enrolment expire after 90 days; sensors renew
theirs with the credential itself well before.`,
		Args: cobra.NoArgs,
	}
	cm.register(create)
	create.Flags().StringVar(&role, "role", "", "sensor, analyst or responder (required)")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 30m, 12h, 7d (1m to 5y) or never (default: 7d for sensor, 90d otherwise)")
	create.Flags().IntVar(&uses, "uses", -1, "sensor tokens: how many enrolments (default 100, or 1 with --host; 0: no bound)")
	create.Flags().StringVar(&host, "host", "", "sensor tokens: enrol only this host id (a reinstalled till)")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		switch role {
		case api.RoleSensor, api.RoleAnalyst, api.RoleResponder:
		case "":
			return cfgfile.Usagef("--role is required: sensor, analyst or responder")
		default:
			return cfgfile.Usagef("--role %q must be sensor, analyst or responder (agent credentials are issued at enrolment)", role)
		}
		if role != api.RoleSensor && (host != "" || cmd.Flags().Changed("uses")) {
			return cfgfile.Usagef("--host and --uses are for sensor (enrolment) tokens only")
		}
		if uses < -1 || (cmd.Flags().Changed("uses") && uses < 0) {
			return cfgfile.Usagef("--uses %d must be 0 (no bound) or more", uses)
		}
		maxUses := 0
		if role == api.RoleSensor {
			switch {
			case uses >= 0:
				maxUses = uses
			case host != "":
				maxUses = 1
			default:
				maxUses = DefaultEnrolUses
			}
		}
		expires := time.Now().Add(DefaultUserTTL)
		if role == api.RoleSensor {
			expires = time.Now().Add(DefaultEnrolTTL)
		}
		if cmd.Flags().Changed("ttl") {
			if strings.TrimSpace(ttl) == "never" {
				expires = time.Time{}
			} else {
				d, err := parseTTL(ttl)
				if err != nil {
					return err
				}
				expires = time.Now().Add(d)
			}
		}
		st, err := openForTokens(cmd, &cm)
		if err != nil {
			return err
		}
		defer st.Close()
		t, err := st.CreateToken(cmd.Context(), role, host, expires, maxUses)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, t)
		return err
	}
	tok.AddCommand(create)

	var (
		lcm    common
		agents bool
	)
	list := &cobra.Command{
		Use:   "list [--agents]",
		Short: "list tokens: id, role, host, created, expires, uses (never a secret)",
		Long: `List the tokens the collector accepts or accepted, oldest first: the id
that ` + "`token revoke`" + ` takes, role, host (agent credentials and host-specific
enrolment tokens), creation, expiry, uses and state. Agent credentials (one
per enrolment and renewal) are shown with --agents.`,
		Args: cobra.NoArgs,
	}
	lcm.register(list)
	list.Flags().BoolVar(&agents, "agents", false, "include agent credentials")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		st, err := openForTokens(cmd, &lcm)
		if err != nil {
			return err
		}
		defer st.Close()
		ts, err := st.Tokens(cmd.Context())
		if err != nil {
			return err
		}
		return writeTokens(stdout, ts, agents, time.Now())
	}
	tok.AddCommand(list)

	var rcm common
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "revoke a token by the id `token list` shows; it stops working at once",
		Args:  cobra.ExactArgs(1),
	}
	rcm.register(revoke)
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		id := strings.ToLower(strings.TrimSpace(args[0]))
		if len(id) != store.TokenIDLen || strings.Trim(id, "0123456789abcdef") != "" {
			return cfgfile.Usagef("token id %q: want the %d hex digits `token list` shows", args[0], store.TokenIDLen)
		}
		st, err := openForTokens(cmd, &rcm)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.RevokeToken(cmd.Context(), id); errors.Is(err, store.ErrUnknownToken) {
			return fmt.Errorf("no token with id %s (see `tillwatch-collector token list`)", id)
		} else if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "revoked %s\n", id)
		return err
	}
	tok.AddCommand(revoke)
	return tok
}

// openForTokens opens the store a token command acts on: the one run uses
// with the same flags (openCLIStore refuses another).
func openForTokens(cmd *cobra.Command, cm *common) (store.Store, error) {
	cfg, err := cm.load(cmd)
	if err != nil {
		return nil, err
	}
	if err := validate(cfg); err != nil {
		return nil, err
	}
	return openCLIStore(cmd.Context(), cfg)
}

// writeTokens prints the listing as a table.
func writeTokens(w io.Writer, ts []store.TokenInfo, agents bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tHOST\tCREATED\tEXPIRES\tUSES\tSTATE")
	for _, t := range ts {
		if t.Role == api.RoleAgent && !agents {
			continue
		}
		exp, state := "never", "active"
		if !t.ExpiresAt.IsZero() {
			exp = t.ExpiresAt.UTC().Format(time.RFC3339)
		}
		uses := strconv.Itoa(t.Uses)
		if t.MaxUses > 0 {
			uses += "/" + strconv.Itoa(t.MaxUses)
		}
		switch {
		case t.Revoked:
			state = "revoked"
		case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
			state = "expired"
		case t.MaxUses > 0 && t.Uses >= t.MaxUses:
			state = "used-up"
		}
		host := t.HostID
		if host == "" {
			host = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, host, t.CreatedAt.UTC().Format(time.RFC3339), exp, uses, state)
	}
	return tw.Flush()
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
