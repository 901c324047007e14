package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
)

func alertsCmd(c *conn, out io.Writer) *cobra.Command {
	var (
		since  time.Duration
		host   string
		rule   string
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "List alerts stored by the collector, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since <= 0 {
				return cfgfile.Usagef("--since must be positive, e.g. 15m or 24h")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			alerts, err := cl.Alerts(cmd.Context(), client.AlertQuery{Since: time.Now().Add(-since), HostID: host, RuleID: rule, Limit: limit})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(out, alerts)
			}
			printAlerts(out, alerts)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&since, "since", 24*time.Hour, "only alerts newer than this")
	f.StringVar(&host, "host", "", "only alerts of this host id")
	f.StringVar(&rule, "rule", "", "only alerts of this rule id")
	f.IntVar(&limit, "limit", 100, "at most this many alerts")
	f.BoolVar(&asJSON, "json", false, "one ECS JSON object per line")
	return cmd
}

func hostsCmd(c *conn, out io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "List enrolled sensors and when each was last seen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			hosts, err := cl.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(out, hosts)
			}
			printHosts(out, hosts, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

func writeJSONLines[T any](out io.Writer, items []T) error {
	enc := json.NewEncoder(out)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return nil
}

// field reads a dotted ECS path from a decoded document.
func field(doc map[string]any, path string) any {
	v, _ := event.Lookup(doc, path)
	return v
}

func str(doc map[string]any, path string) string {
	switch v := field(doc, path).(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprint(v)
	}
}

func printAlerts(out io.Writer, alerts []map[string]any) {
	if len(alerts) == 0 {
		fmt.Fprintln(out, "no alerts")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOST\tRULE\tSEV\tPROCESS\tPID\tPARENT\tRESPONSE\tRULE NAME")
	for _, a := range alerts {
		ts := str(a, "@timestamp")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			ts = t.Local().Format("2006-01-02 15:04:05")
		}
		resp := str(a, "tillwatch.response.action")
		if r := str(a, "tillwatch.response.result"); resp != "" && r != "" {
			resp += " (" + truncate(r, 40) + ")"
		}
		if resp == "" {
			resp = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ts, str(a, "host.name"), str(a, "rule.id"),
			str(a, "event.severity"), truncate(str(a, "process.executable"), 48), str(a, "process.pid"),
			str(a, "process.parent.name"), resp, str(a, "rule.name"))
	}
	tw.Flush()
}

func printHosts(out io.Writer, hosts []api.Host, now time.Time) {
	if len(hosts) == 0 {
		fmt.Fprintln(out, "no hosts enrolled")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	// RULES and CONFIG are printed whole: they are compared across tills
	// and searched for in the hosts index, so no abbreviation.
	fmt.Fprintln(tw, "HOST ID\tNAME\tVERSION\tMODE\tRULES\tCONFIG\tLAST SEEN\tALERTS\tHEALTH")
	for _, h := range hosts {
		health := "ok"
		var bad []string
		for comp, st := range h.Health {
			if st != "ok" {
				bad = append(bad, comp+"="+st)
			}
		}
		if len(bad) > 0 {
			slices.Sort(bad)
			health = strings.Join(bad, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s ago\t%d\t%s\n", h.HostID, h.HostName, h.AgentVersion, h.Mode,
			orDash(h.RulesVersion), orDash(h.ConfigVersion), now.Sub(h.LastSeen).Round(time.Second), h.AlertCount, health)
	}
	tw.Flush()
}

// orDash shows a value a sensor has not reported (one older than the
// field) as "-" rather than an empty cell that shifts the eye.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}
