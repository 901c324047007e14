package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
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
		Args:  cobra.NoArgs,
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
			if ttl <= 0 || ttl > killswitch.MaxLifetime {
				return cfgfile.Usagef("--ttl must be from 1s to %s", killswitch.MaxLifetime)
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
			if signWith != "" && st.Command.State != "active" {
				id := st.Command.ID
				if st, err = approve(cmd, c, id, signWith); err != nil {
					return fmt.Errorf("issued %s but could not approve it: %w", id, err)
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
	f.StringArrayVar(&params, "param", nil, "action parameter KEY=VALUE (repeatable), e.g. product=kaseya-vsa")
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail and shown on every host)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the command stays valid")
	f.StringVar(&signWith, "sign-with", "", "your responder private key: approve the command as you issue it")
	f.BoolVar(&asJSON, "json", false, "print one JSON object with id and state")
	cmd.MarkFlagRequired("action")
	cmd.MarkFlagRequired("target")
	return cmd
}

func approveCmd(c *conn, out io.Writer) *cobra.Command {
	var signWith string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "approve ID",
		Short: "Show a pending command and sign it with your responder key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if signWith == "" {
				return cfgfile.Usagef("--sign-with KEY is required (your responder private key)")
			}
			st, err := approve(cmd, c, args[0], signWith)
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
	cmd.Flags().StringVar(&signWith, "sign-with", "", "your responder private key")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object with id and state")
	return cmd
}

// approve fetches the command, checks that the payload says what the
// collector claims (a responder signs bytes, so the bytes are what is
// shown), signs and submits.
func approve(cmd *cobra.Command, c *conn, id, keyFile string) (api.CommandStatus, error) {
	priv, err := killswitch.LoadPrivateKey(keyFile)
	if err != nil {
		return api.CommandStatus{}, err
	}
	cl, err := c.client()
	if err != nil {
		return api.CommandStatus{}, err
	}
	st, err := cl.Command(cmd.Context(), id)
	if err != nil {
		return st, err
	}
	payload, err := killswitch.ParseCanonical(st.Command.Signed.Payload)
	if err != nil {
		return st, fmt.Errorf("command %s: the collector served a payload that is not a valid command: %w", id, err)
	}
	if payload.ID != id || payload.Action != st.Command.Action {
		return st, fmt.Errorf("command %s: the payload (%s %s) does not match what the collector lists (%s %s); not signing",
			id, payload.ID, payload.Action, st.Command.ID, st.Command.Action)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "signing %s: %s on %s, params %v, reason %q, valid until %s\n",
		payload.ID, payload.Action, payload.Targets, payload.Params, payload.Reason, payload.NotAfter.Format(time.RFC3339))
	return cl.ApproveCommand(cmd.Context(), id, killswitch.Sign(priv, st.Command.Signed.Payload))
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
