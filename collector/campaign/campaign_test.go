package campaign_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/ingest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	st   *sqlite.Store
	cmds *command.Service
	clk  *clock
}

func newEnv(t *testing.T, hosts int) *env {
	t.Helper()
	clk := &clock{t: time.Now().UTC()}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	cmds, err := command.New(command.Options{Store: st, Key: priv, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range hosts {
		id := fmt.Sprintf("till-%02d", i)
		if _, err := st.Enroll(context.Background(), api.EnrollRequest{HostID: id, HostName: id, AgentVersion: "1"}, store.Enroller{}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{st: st, cmds: cmds, clk: clk}
}

// alert is an RMM-behaviour alert as a sensor sends it, parsed the way the
// collector's ingest parses it.
func (e *env) alert(t *testing.T, host, rule, ruleset, fingerprint string) store.Doc {
	t.Helper()
	ev := event.Event{
		Timestamp: e.clk.Now(), ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Severity: 73, Dataset: event.DatasetAlerts},
		Host:  event.Host{ID: host, Name: host}, Agent: event.Agent{ID: host, Type: event.AgentType, Version: "1"},
		Rule:      &event.Rule{ID: rule, Name: "RMM agent decodes into an executable", Ruleset: ruleset},
		Threat:    &event.Threat{Framework: "MITRE ATT&CK"},
		Tillwatch: &event.Tillwatch{RMM: &event.RMM{Product: "kaseya-vsa", Fingerprint: fingerprint}},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ingest.ParseLine(b, host, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func (e *env) campaignAlerts(t *testing.T) []map[string]any {
	t.Helper()
	raw, err := e.st.QueryAlerts(context.Background(), store.AlertFilter{RuleID: campaign.RuleCampaign})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range raw {
		var m map[string]any
		json.Unmarshal(r, &m)
		out = append(out, m)
	}
	return out
}

// TestCampaignDisablesRMMFleetWide is the Coop case: the same RMM behaviour
// on three tills within the window raises a campaign alert and issues a
// disable-rmm for the agent's product to every host, signed and active.
func TestCampaignDisablesRMMFleetWide(t *testing.T) {
	e := newEnv(t, 20)
	d := campaign.New(campaign.Options{
		Policy: campaign.Policy{Action: campaign.ActionDisableRMM}, Store: e.st, Issuer: e.cmds, Now: e.clk.Now,
	})
	for i := range 2 {
		d.Observe([]store.Doc{e.alert(t, fmt.Sprintf("till-%02d", i), "TW-RMM-0101", event.RulesetRMM, "fp-kaseya-certutil")})
	}
	d.Wait()
	if n := len(e.campaignAlerts(t)); n != 0 {
		t.Fatalf("a campaign after two hosts (%d alerts)", n)
	}
	e.clk.Add(time.Minute)
	d.Observe([]store.Doc{e.alert(t, "till-02", "TW-RMM-0101", event.RulesetRMM, "fp-kaseya-certutil")})
	d.Wait()
	got := e.campaignAlerts(t)
	// Two keys complete at once (the rule and the RMM command line), each
	// its own campaign alert; both name the same hosts.
	if len(got) != 2 {
		t.Fatalf("%d campaign alerts, want 2 (rule and rmm-command keys)", len(got))
	}
	cmds, err := e.st.Commands(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 2 {
		t.Fatalf("%d commands issued, want one per campaign key", len(cmds))
	}
	for _, c := range cmds {
		if c.Action != killswitch.ActionDisableRMM || c.State != store.CommandActive || c.Issuer != "collector:campaign" || c.Targets != "all" {
			t.Fatalf("command %+v", c)
		}
		payload, err := killswitch.ParseCanonical(c.Signed.Payload)
		if err != nil || payload.Params["product"] != "kaseya-vsa" {
			t.Fatalf("payload %+v %v", payload, err)
		}
		_, hosts, err := e.st.Command(context.Background(), c.ID)
		if err != nil || len(hosts) != 20 {
			t.Fatalf("command reaches %d hosts (%v), want all 20", len(hosts), err)
		}
	}
	a := got[0]
	tw := a["tillwatch"].(map[string]any)
	camp := tw["campaign"].(map[string]any)
	if hosts := camp["hosts"].([]any); len(hosts) != 3 {
		t.Fatalf("campaign hosts %v", hosts)
	}
	if ks := tw["killswitch"].(map[string]any); ks["command_id"] == "" {
		t.Fatalf("campaign alert does not name its command: %v", ks)
	}

	// The same campaign continuing does not issue again within the window.
	d.Observe([]store.Doc{e.alert(t, "till-03", "TW-RMM-0101", event.RulesetRMM, "fp-kaseya-certutil")})
	d.Wait()
	if cmds, _ := e.st.Commands(context.Background(), 10); len(cmds) != 2 {
		t.Fatalf("%d commands after a fourth host; a campaign fires once per window", len(cmds))
	}
}

func TestCampaignPolicyLimits(t *testing.T) {
	cases := []struct {
		name    string
		policy  campaign.Policy
		ruleset string
		spread  time.Duration // between hosts
		alerts  int           // campaign alerts expected
		cmds    int
	}{
		{"dry run alerts but issues nothing", campaign.Policy{Action: campaign.ActionDisableRMM, DryRun: true}, event.RulesetRMM, 0, 2, 0},
		{"alert-only policy", campaign.Policy{}, event.RulesetRMM, 0, 2, 0},
		{"hosts spread beyond the window", campaign.Policy{Action: campaign.ActionDisableRMM, Window: 5 * time.Minute}, event.RulesetRMM, 3 * time.Minute, 0, 0},
		{"refused kill-switch commands never trigger commands", campaign.Policy{Action: campaign.ActionDisableRMM}, event.RulesetKillswitch, 0, 0, 0},
		{"isolation beyond the bound waits for approval", campaign.Policy{Action: campaign.ActionIsolate}, event.RulesetRMM, 0, 2, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 8)
			d := campaign.New(campaign.Options{Policy: tc.policy, Store: e.st, Issuer: e.cmds, Now: e.clk.Now})
			for i := range 3 {
				d.Observe([]store.Doc{e.alert(t, fmt.Sprintf("till-%02d", i), "TW-RMM-0101", tc.ruleset, "fp-x")})
				e.clk.Add(tc.spread)
			}
			d.Wait()
			if n := len(e.campaignAlerts(t)); n != tc.alerts {
				t.Fatalf("%d campaign alerts, want %d", n, tc.alerts)
			}
			cmds, _ := e.st.Commands(context.Background(), 10)
			if len(cmds) != tc.cmds {
				t.Fatalf("%d commands, want %d", len(cmds), tc.cmds)
			}
			for _, c := range cmds {
				if c.Action == killswitch.ActionIsolateHost && c.State != store.CommandPendingApproval {
					t.Fatalf("fleet-wide isolation by the collector's key alone: %+v", c)
				}
			}
		})
	}
}
