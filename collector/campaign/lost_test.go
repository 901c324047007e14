package campaign_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/ingest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/event"
)

// lostStore is a real store of either kind.
type lostStore interface {
	campaign.Store
	Enroll(ctx context.Context, req api.EnrollRequest, by store.Enroller) (api.EnrollResponse, error)
	Heartbeat(ctx context.Context, hostID string, hb api.Heartbeat) error
}

// stores opens one store of each backend this machine has: SQLite always,
// Elasticsearch when TILLWATCH_ES_URL is set (a namespace of its own).
func stores(t *testing.T, clk *clock) map[string]lostStore {
	t.Helper()
	out := map[string]lostStore{}
	sq, err := sqlite.Open(filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	out["sqlite"] = sq
	if url := os.Getenv("TILLWATCH_ES_URL"); url != "" {
		b := make([]byte, 6)
		rand.Read(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		es, err := elasticsearch.Open(ctx, elasticsearch.Options{URL: url, Namespace: "t" + hex.EncodeToString(b), Now: clk.Now})
		if err != nil {
			t.Fatalf("elasticsearch: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if res, err := es.Client().Indices.Delete(es.StateIndices(), es.Client().Indices.Delete.WithContext(ctx),
				es.Client().Indices.Delete.WithIgnoreUnavailable(true)); err == nil {
				res.Body.Close()
			}
			es.Close()
		})
		out["elasticsearch"] = es
	} else {
		t.Log("TILLWATCH_ES_URL not set: Elasticsearch not tested")
	}
	return out
}

// send stores one alert as a sensor's batch and shows it to d, as the
// server does.
func send(t *testing.T, st lostStore, d *campaign.Detector, clk *clock, host, rule, ruleset string, severity int, fp string) {
	t.Helper()
	ev := event.Event{
		Timestamp: clk.Now(), ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Severity: severity, Dataset: event.DatasetAlerts},
		Host:  event.Host{ID: host, Name: host}, Agent: event.Agent{ID: host, Type: event.AgentType, Version: "1"},
		Rule:   &event.Rule{ID: rule, Name: rule, Ruleset: ruleset},
		Threat: &event.Threat{Framework: "MITRE ATT&CK"},
	}
	if fp != "" {
		ev.Tillwatch = &event.Tillwatch{RMM: &event.RMM{Product: "kaseya-vsa", Fingerprint: fp}}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ingest.ParseLine(b, host, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Ingest(context.Background(), []store.Doc{doc}); err != nil {
		t.Fatal(err)
	}
	d.Observe([]store.Doc{doc})
	d.Wait()
}

func campaigns(t *testing.T, st lostStore) []string {
	t.Helper()
	raw, err := st.QueryAlerts(context.Background(), store.AlertFilter{RuleID: campaign.RuleCampaign})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range raw {
		var a struct {
			Tillwatch struct {
				Campaign struct {
					Key   string   `json:"key"`
					Hosts []string `json:"hosts"`
				} `json:"campaign"`
			} `json:"tillwatch"`
		}
		json.Unmarshal(r, &a)
		keys = append(keys, fmt.Sprintf("%s %v", a.Tillwatch.Campaign.Key, a.Tillwatch.Campaign.Hosts))
	}
	return keys
}

// TestLostTillCountsTowardCampaign: two tills raise a serious RMM alert, a
// third only a minor one (below min_severity) and is then lost. Without
// the loss there is no campaign; a tamper alert, or the sensor's silence,
// makes the third till's RMM alert count, and the campaign fires. A till
// lost without any RMM alert before adds nothing. Both stores.
func TestLostTillCountsTowardCampaign(t *testing.T) {
	losses := []struct {
		name string
		lose func(t *testing.T, st lostStore, d *campaign.Detector, clk *clock, host string)
	}{
		{"tamper alert", func(t *testing.T, st lostStore, d *campaign.Detector, clk *clock, host string) {
			send(t, st, d, clk, host, "TW-TAMPER-0001", event.RulesetIntegrity, 90, "")
		}},
		{"unclean restart", func(t *testing.T, st lostStore, d *campaign.Detector, clk *clock, host string) {
			send(t, st, d, clk, host, campaign.RuleUncleanStop, event.RulesetIntegrity, 73, "")
		}},
		{"silenced", func(t *testing.T, st lostStore, d *campaign.Detector, clk *clock, host string) {
			// The collector's watchdog finds the silence and tells the
			// detector, as tillwatch-collector wires it.
			clk.Add(10 * time.Minute)
			for i := range 4 { // the others are heard from
				if id := fmt.Sprintf("till-%02d", i); id != host {
					if err := st.Heartbeat(context.Background(), id, api.Heartbeat{AgentVersion: "1"}); err != nil {
						t.Fatal(err)
					}
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			told := make(chan string, 16)
			go watchdog.Run(ctx, st, watchdog.Options{SilenceAfter: 5 * time.Minute, Interval: 20 * time.Millisecond, Now: clk.Now,
				OnSilenced: func(ctx context.Context, h api.Host) {
					d.HostLost(ctx, h.HostID, h.LastSeen)
					told <- h.HostID
				}})
			deadline := time.After(30 * time.Second)
			seen := map[string]bool{}
			for !seen[host] {
				select {
				case h := <-told:
					seen[h] = true
				case <-deadline:
					t.Fatalf("the watchdog never reported %s silenced (told %v)", host, seen)
				}
			}
			d.Wait()
		}},
	}
	for _, loss := range losses {
		t.Run(loss.name, func(t *testing.T) {
			clk := &clock{t: time.Now().UTC()}
			for name, st := range stores(t, clk) {
				t.Run(name, func(t *testing.T) {
					ctx := context.Background()
					for i := range 4 {
						id := fmt.Sprintf("till-%02d", i)
						if _, err := st.Enroll(ctx, api.EnrollRequest{HostID: id, HostName: id, AgentVersion: "1"}, store.Enroller{}); err != nil {
							t.Fatal(err)
						}
					}
					// Window 30m: the silence is noticed 5-10 minutes later.
					d := campaign.New(campaign.Options{Policy: campaign.Policy{Hosts: 3, Window: 30 * time.Minute, MinSeverity: 95}, Store: st, Now: clk.Now})
					send(t, st, d, clk, "till-00", "TW-RMM-0101", event.RulesetRMM, 98, "fp-chain")
					send(t, st, d, clk, "till-01", "TW-RMM-0101", event.RulesetRMM, 98, "fp-chain")
					send(t, st, d, clk, "till-02", "TW-RMM-0107", event.RulesetRMM, 85, "fp-chain")
					send(t, st, d, clk, "till-03", "TW-EXEC-0002", event.RulesetSigma, 47, "")
					if got := campaigns(t, st); len(got) != 0 {
						t.Fatalf("a campaign before any till was lost: %v", got)
					}
					clk.Add(time.Second)
					loss.lose(t, st, d, clk, "till-03") // lost, but no RMM alert before
					if got := campaigns(t, st); len(got) != 0 {
						t.Fatalf("a till lost without an RMM alert completed a campaign: %v", got)
					}
					loss.lose(t, st, d, clk, "till-02")
					got := campaigns(t, st)
					want := "rmm-command:fp-chain [till-00 till-01 till-02]"
					if len(got) != 1 || got[0] != want {
						t.Errorf("campaigns %v, want [%s]", got, want)
					}
				})
			}
		})
	}
}
