// tillwatch-collector token create|list|revoke: enrolment and API tokens,
// their lifetimes and how they are printed.

package app

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

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
