package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

func keysCmd(out io.Writer) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Manage kill-switch signing keys", Args: cobra.NoArgs}
	var dir, name string
	gen := &cobra.Command{
		Use:   "gen",
		Short: "Create an Ed25519 key pair: DIR/NAME.key (keep secret) and DIR/NAME.pub (pin on sensors and the collector)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if dir == "" {
				return cfgfile.Usagef("--out DIR is required")
			}
			if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
				return cfgfile.Usagef("--name %q must be a plain file name", name)
			}
			id, err := killswitch.GenerateKey(dir, name)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "key %s\nprivate %s\npublic  %s\n", id, filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub"))
			return nil
		},
	}
	gen.Flags().StringVar(&dir, "out", "", "directory to write the key pair into")
	gen.Flags().StringVar(&name, "name", "killswitch", "base name of the key files")
	keys.AddCommand(gen)
	return keys
}

func killswitchCmd(c *conn, out io.Writer) *cobra.Command {
	ks := &cobra.Command{
		Use:   "killswitch",
		Short: "Issue, approve and follow signed fleet commands",
		Args:  cobra.NoArgs,
	}
	ks.AddCommand(issueCmd(c, out), approveCmd(c, out), listCmd(c, out), statusCmd(c, out))
	return ks
}

// ParseTarget reads the CLI's target syntax: all, host:ID[,ID...],
// label:K=V[,K=V...], or a bare host id.
func ParseTarget(s string) (killswitch.Targets, error) {
	switch {
	case s == "all":
		return killswitch.Targets{All: true}, nil
	case strings.HasPrefix(s, "label:"):
		labels := map[string]string{}
		for _, kv := range strings.Split(strings.TrimPrefix(s, "label:"), ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || v == "" {
				return killswitch.Targets{}, fmt.Errorf("--target %q: label selectors are label:KEY=VALUE[,KEY=VALUE]", s)
			}
			labels[k] = v
		}
		return killswitch.Targets{Labels: labels}, nil
	case strings.HasPrefix(s, "host:"):
		s = strings.TrimPrefix(s, "host:")
	}
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return killswitch.Targets{}, fmt.Errorf("--target %q names no host (all, host:ID[,ID], label:K=V)", s)
	}
	return killswitch.Targets{Hosts: hosts}, nil
}

func issueCmd(c *conn, out io.Writer) *cobra.Command {
	var (
		action, target, reason, signWith string
		params                           []string
		ttl                              time.Duration
		asJSON                           bool
	)
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a command; prints its id (with --sign-with, also approves it with your key)",
		Long: "Issue a command. The collector's answer is compared byte for byte with the command built from " +
			"these flags (only the id, the issue time and the issuer are the collector's to choose); any other " +
			"difference is refused and, with --sign-with, nothing is signed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, ok := killswitch.ClassOf(action); !ok {
				return cfgfile.Usagef("--action %q is not one of %s", action, strings.Join(killswitch.Actions(), ", "))
			}
			targets, err := ParseTarget(target)
			if err != nil {
				return cfgfile.Usage(err)
			}
			pm := map[string]string{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return cfgfile.Usagef("--param %q must be KEY=VALUE", p)
				}
				pm[k] = v
			}
			if ttl < time.Second || ttl > killswitch.MaxLifetime {
				return cfgfile.Usagef("--ttl must be from 1s to %s", killswitch.MaxLifetime)
			}
			ttl = ttl.Truncate(time.Second) // what the API carries
			want := killswitch.Command{V: killswitch.Version, Targets: targets, Action: action, Reason: reason}
			if len(pm) > 0 {
				want.Params = pm
			}
			// Check locally what the collector would refuse, e.g. a pid
			// kill without start_time, with placeholders for its fields.
			now := time.Now().UTC()
			trial := want
			trial.ID, trial.IssuedAt, trial.NotBefore, trial.NotAfter, trial.Issuer = "ks-local-check", now, now, now.Add(ttl), "responder:cli"
			if err := trial.Validate(); err != nil {
				return cfgfile.Usagef("%s", cfgfile.OneLine(err))
			}
			var priv ed25519.PrivateKey
			if signWith != "" {
				if priv, err = killswitch.LoadPrivateKey(signWith); err != nil {
					return err
				}
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			st, err := cl.IssueCommand(cmd.Context(), api.IssueRequest{
				Action: action, Targets: targets, Params: pm, Reason: reason, TTLSeconds: int(ttl / time.Second),
			})
			if err != nil {
				return err
			}
			got, err := sameAsRequested(want, ttl, st.Command, now)
			if err != nil {
				return fmt.Errorf("command %s: %w; not signing, and do not approve it", st.Command.ID, err)
			}
			if priv != nil && st.Command.State != "active" {
				describe(cmd.ErrOrStderr(), got, st)
				if st, err = cl.ApproveCommand(cmd.Context(), got.ID, killswitch.Sign(priv, st.Command.Signed.Payload)); err != nil {
					return fmt.Errorf("issued %s but could not approve it: %w", got.ID, err)
				}
			}
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"id": st.Command.ID, "state": st.Command.State})
			}
			fmt.Fprintln(out, st.Command.ID)
			if st.Command.State != "active" {
				fmt.Fprintf(out, "pending approval: needs %d distinct responders (tillwatch killswitch approve %s --sign-with KEY)\n",
					st.Command.Required, st.Command.ID)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&action, "action", "", "one of "+strings.Join(killswitch.Actions(), ", "))
	f.StringVar(&target, "target", "", "all, host:ID[,ID...], label:KEY=VALUE[,...] or a host id")
	f.StringArrayVar(&params, "param", nil, "action parameter KEY=VALUE (repeatable), e.g. product=kaseya-vsa; kill-process by pid needs start_time too")
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail and shown on every host)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the command stays valid")
	f.StringVar(&signWith, "sign-with", "", "your responder private key: approve the command as you issue it")
	f.BoolVar(&asJSON, "json", false, "print one JSON object with id and state")
	cmd.MarkFlagRequired("action")
	cmd.MarkFlagRequired("target")
	return cmd
}

// issueClockSkew is how far the collector's issue time may be from this
// machine's clock.
const issueClockSkew = 10 * time.Minute

// sameAsRequested checks the collector's answer to an issue request: its
// payload must be byte for byte the canonical encoding of want completed
// with only what the collector chooses (the id, the issue time within
// issueClockSkew of sent, a responder issuer), valid from the issue time
// for exactly ttl, and its listing must say the same.
func sameAsRequested(want killswitch.Command, ttl time.Duration, rec api.Command, sent time.Time) (killswitch.Command, error) {
	got, err := killswitch.ParseCanonical(rec.Signed.Payload)
	if err != nil {
		return got, fmt.Errorf("the collector returned a payload that is not a valid command: %w", err)
	}
	if d := got.IssuedAt.Sub(sent); d > issueClockSkew || d < -issueClockSkew {
		return got, fmt.Errorf("the collector dated the command %s, %s from this machine's clock", got.IssuedAt.Format(time.RFC3339), d.Round(time.Second))
	}
	if !strings.HasPrefix(got.Issuer, "responder:") {
		return got, fmt.Errorf("the collector names the issuer %q, not a responder token", got.Issuer)
	}
	want.ID, want.Issuer = got.ID, got.Issuer
	want.IssuedAt, want.NotBefore, want.NotAfter = got.IssuedAt, got.IssuedAt, got.IssuedAt.Add(ttl)
	exp, err := want.Canonical()
	if err != nil {
		return got, err
	}
	if !bytes.Equal(exp, rec.Signed.Payload) {
		return got, fmt.Errorf("the collector returned a command other than the one requested (%s on %s, valid %s to %s); you asked for %s on %s for %s",
			got.Action, got.Targets, got.NotBefore.Format(time.RFC3339), got.NotAfter.Format(time.RFC3339), want.Action, want.Targets, ttl)
	}
	if err := listingMatches(got, rec); err != nil {
		return got, err
	}
	return got, nil
}

// listingMatches refuses a command whose listing (what `killswitch list`
// and `status` show) differs from its payload (what is signed).
func listingMatches(p killswitch.Command, rec api.Command) error {
	if rec.ID != p.ID || rec.Action != p.Action || rec.Targets != p.Targets.String() || rec.Issuer != p.Issuer || rec.Reason != p.Reason {
		return fmt.Errorf("the collector lists %s %s on %s by %s but the payload to sign says %s %s on %s by %s",
			rec.ID, rec.Action, rec.Targets, rec.Issuer, p.ID, p.Action, p.Targets, p.Issuer)
	}
	return nil
}

// describe shows everything a responder's signature covers.
func describe(w io.Writer, p killswitch.Command, st api.CommandStatus) {
	fmt.Fprintf(w, "kill-switch command %s asks for your signature:\n", p.ID)
	fmt.Fprintf(w, "  action:     %s\n", p.Action)
	switch {
	case p.Targets.All:
		fmt.Fprintf(w, "  targets:    all: EVERY host of the fleet (%d enrolled now, and any enrolled before it expires)\n", len(st.Hosts))
	case len(p.Targets.Labels) > 0:
		fmt.Fprintf(w, "  targets:    %s: every host with these labels (%d now, and any labelled so before it expires)\n", p.Targets, len(st.Hosts))
	default:
		fmt.Fprintf(w, "  targets:    %d named host(s): %s\n", len(p.Targets.Hosts), strings.Join(p.Targets.Hosts, ", "))
	}
	if len(p.Params) == 0 {
		fmt.Fprintln(w, "  params:     (none)")
	} else {
		keys := make([]string, 0, len(p.Params))
		for k := range p.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			label := "  params:    "
			if i > 0 {
				label = "             "
			}
			fmt.Fprintf(w, "%s %s=%q\n", label, k, p.Params[k])
		}
	}
	fmt.Fprintf(w, "  valid:      %s to %s (TTL %s)\n", p.NotBefore.Format(time.RFC3339), p.NotAfter.Format(time.RFC3339), p.NotAfter.Sub(p.IssuedAt))
	fmt.Fprintf(w, "  reason:     %q\n", p.Reason)
	fmt.Fprintf(w, "  issuer:     %s, issued %s\n", p.Issuer, p.IssuedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "  approvals:  %d signature(s) so far, %d responder(s) needed\n", len(st.Command.Signed.Signatures), st.Command.Required)
}

func approveCmd(c *conn, out io.Writer) *cobra.Command {
	var (
		signWith, expectAction, expectTarget string
		yes, asJSON                          bool
	)
	cmd := &cobra.Command{
		Use:   "approve ID",
		Short: "Show a pending command in full and, once confirmed, sign it with your responder key",
		Long: "Fetch the command, show everything the signature covers (action, targets with their host count, " +
			"params, validity, reason, issuer) and sign exactly those bytes after you type yes. Scripts pass --yes " +
			"together with --expect-action and --expect-target, and the command must match both.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if signWith == "" {
				return cfgfile.Usagef("--sign-with KEY is required (your responder private key)")
			}
			if yes && (expectAction == "" || expectTarget == "") {
				return cfgfile.Usagef("--yes signs without asking, so it needs --expect-action and --expect-target to say what you approve")
			}
			var expect *killswitch.Targets
			if expectTarget != "" {
				t, err := ParseTarget(expectTarget)
				if err != nil {
					return cfgfile.Usage(fmt.Errorf("--expect-target: %w", err))
				}
				expect = &t
			}
			priv, err := killswitch.LoadPrivateKey(signWith)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			id := args[0]
			st, err := cl.Command(cmd.Context(), id)
			if err != nil {
				return err
			}
			p, err := killswitch.ParseCanonical(st.Command.Signed.Payload)
			if err != nil {
				return fmt.Errorf("command %s: the collector served a payload that is not a valid command: %w", id, err)
			}
			if p.ID != id {
				return fmt.Errorf("command %s: the collector served the payload of %s; not signing", id, p.ID)
			}
			if err := listingMatches(p, st.Command); err != nil {
				return fmt.Errorf("command %s: %w; not signing", id, err)
			}
			describe(cmd.ErrOrStderr(), p, st)
			if expectAction != "" && p.Action != expectAction {
				return fmt.Errorf("command %s is %s, not the %s you expect; not signing", id, p.Action, expectAction)
			}
			if expect != nil && !sameTargets(*expect, p.Targets) {
				return fmt.Errorf("command %s targets %s, not the %s you expect; not signing", id, p.Targets, expect)
			}
			if !yes {
				fmt.Fprint(cmd.ErrOrStderr(), "Type yes to sign exactly this command: ")
				line, _ := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), 256)).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return fmt.Errorf("command %s: not confirmed; nothing signed", id)
				}
			}
			st, err = cl.ApproveCommand(cmd.Context(), id, killswitch.Sign(priv, st.Command.Signed.Payload))
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"id": st.Command.ID, "state": st.Command.State})
			}
			fmt.Fprintf(out, "%s %s\n", st.Command.ID, st.Command.State)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&signWith, "sign-with", "", "your responder private key")
	f.BoolVar(&yes, "yes", false, "sign without asking (needs --expect-action and --expect-target)")
	f.StringVar(&expectAction, "expect-action", "", "refuse unless the command's action is this")
	f.StringVar(&expectTarget, "expect-target", "", "refuse unless the command's targets are exactly these (same syntax as issue --target)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object with id and state")
	return cmd
}

// sameTargets compares two target selections as sets.
func sameTargets(a, b killswitch.Targets) bool {
	if a.All != b.All || len(a.Hosts) != len(b.Hosts) || !maps.Equal(a.Labels, b.Labels) {
		return false
	}
	x, y := slices.Clone(a.Hosts), slices.Clone(b.Hosts)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func listCmd(c *conn, out io.Writer) *cobra.Command {
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "The newest commands (the audit trail)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			cmds, err := cl.Commands(cmd.Context(), limit)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(out, cmds)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tISSUED\tACTION\tTARGETS\tSTATE\tISSUER\tREASON")
			for _, k := range cmds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.IssuedAt.Local().Format(time.DateTime),
					k.Action, k.Targets, k.State, k.Issuer, k.Reason)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

func statusCmd(c *conn, out io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Every targeted host's state and result for one command",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			st, err := cl.Command(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(out, st.Hosts)
			}
			k := st.Command
			fmt.Fprintf(out, "%s  %s on %s  %s  issued %s by %s\n", k.ID, k.Action, k.Targets, k.State,
				k.IssuedAt.Local().Format(time.DateTime), k.Issuer)
			counts := map[string]int{}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tSTATE\tRESULT\tDETAIL")
			for _, h := range st.Hosts {
				res, detail := "", ""
				if h.Result != nil {
					res, detail = h.Result.Status, h.Result.Detail
					if h.Result.Refusal != "" {
						detail = h.Result.Refusal + ": " + detail
					}
					counts[res]++
				} else {
					counts[h.State]++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.HostID, h.State, res, detail)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			keys := make([]string, 0, len(counts))
			for k := range counts {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var b bytes.Buffer
			for _, k := range keys {
				fmt.Fprintf(&b, " %s=%d", k, counts[k])
			}
			fmt.Fprintf(out, "%d hosts:%s\n", len(st.Hosts), b.String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per host")
	return cmd
}
