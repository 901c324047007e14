// Package campaign is the collector's fleet correlation: the same rule,
// the same command line under an RMM agent (tillwatch.rmm.fingerprint) or
// the same payload hash on K hosts within T is a campaign, the shape of a
// supply-chain push such as Kaseya VSA's. A campaign is an alert of its
// own (TW-COLL-0003) and, by policy, an automatic kill-switch command so
// that the first tills hit protect the rest.
package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// RuleCampaign is the campaign alert's rule id.
const RuleCampaign = "TW-COLL-0003"

// Policy actions.
const (
	ActionAlert      = "alert"
	ActionDisableRMM = killswitch.ActionDisableRMM
	ActionIsolate    = killswitch.ActionIsolateHost
)

// Policy says what a campaign sets off.
type Policy struct {
	Hosts       int           // K: distinct hosts (default 3)
	Window      time.Duration // T (default 10m)
	MinSeverity int           // alerts below are not counted (default 47)
	Action      string        // alert (default), disable-rmm or isolate-host
	// Targets of the automatic command (default all hosts).
	Targets killswitch.Targets
	// DryRun raises the campaign alert and logs the command it would
	// issue, without issuing it.
	DryRun bool
	// TTL of the automatic command (default 1h).
	TTL time.Duration
	// Product is the fleet's RMM tool (catalog id) that disable-rmm
	// disables when the alerts behind a campaign do not name one (a Sigma
	// or YARA detection); empty means every RMM product found on a host.
	Product string
}

func (p Policy) withDefaults() Policy {
	if p.Hosts <= 0 {
		p.Hosts = 3
	}
	if p.Window <= 0 {
		p.Window = 10 * time.Minute
	}
	if p.MinSeverity == 0 {
		p.MinSeverity = 47
	}
	if p.Action == "" {
		p.Action = ActionAlert
	}
	if !p.Targets.All && len(p.Targets.Hosts) == 0 && len(p.Targets.Labels) == 0 {
		p.Targets = killswitch.Targets{All: true}
	}
	if p.TTL <= 0 {
		p.TTL = time.Hour
	}
	return p
}

// Issuer issues kill-switch commands (collector/command).
type Issuer interface {
	Issue(ctx context.Context, issuer string, r command.Request) (store.CommandRecord, error)
}

// Store is what the detector needs of the store: where the campaign alert
// goes, and the recent alerts of a host whose sensor was lost.
type Store interface {
	watchdog.Store
	QueryAlerts(ctx context.Context, f store.AlertFilter) ([]json.RawMessage, error)
}

// Options configure a Detector.
type Options struct {
	Policy Policy
	Store  Store  // where the campaign alert goes; nil: log only
	Issuer Issuer // nil: alert only
	Now    func() time.Time
	Log    *slog.Logger
}

// Detector counts hosts per key over a sliding window. It only sees the
// alerts that reach this collector: collectors sharing a store each count
// their own sensors (documented in docs/collector.md).
type Detector struct {
	o Options

	mu    sync.Mutex
	seen  map[string]map[string]sighting // key -> host -> latest sighting
	fired map[string]time.Time           // key -> when it last fired
	lost  map[string]time.Time           // host -> the loss already counted
	wg    sync.WaitGroup
}

type sighting struct {
	at      time.Time
	alertID string
	product string // tillwatch.rmm.product, if any
}

// New builds a detector.
func New(o Options) *Detector {
	o.Policy = o.Policy.withDefaults()
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With(logkey.Component, "campaign")
	return &Detector{o: o, seen: map[string]map[string]sighting{}, fired: map[string]time.Time{}, lost: map[string]time.Time{}}
}

// alertFields is what the detector reads of an alert.
type alertFields struct {
	Timestamp time.Time `json:"@timestamp"`
	Event     struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	} `json:"event"`
	Host struct {
		ID string `json:"id"`
	} `json:"host"`
	Rule struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Ruleset string `json:"ruleset"`
	} `json:"rule"`
	Process struct {
		Hash struct {
			SHA256 string `json:"sha256"`
		} `json:"hash"`
	} `json:"process"`
	File struct {
		Hash struct {
			SHA256 string `json:"sha256"`
		} `json:"hash"`
	} `json:"file"`
	Tillwatch struct {
		RMM struct {
			Product     string `json:"product"`
			Fingerprint string `json:"fingerprint"`
		} `json:"rmm"`
	} `json:"tillwatch"`
}

// keys are what makes alerts on different hosts "the same".
func (a *alertFields) keys() []string {
	var k []string
	if a.Rule.ID != "" {
		k = append(k, "rule:"+a.Rule.ID)
	}
	if fp := a.Tillwatch.RMM.Fingerprint; fp != "" {
		k = append(k, "rmm-command:"+fp)
	}
	for _, h := range []string{a.Process.Hash.SHA256, a.File.Hash.SHA256} {
		if len(h) == 64 {
			k = append(k, "sha256:"+strings.ToLower(h))
		}
	}
	return k
}

// Lost tells whether an alert says its host's sensor was switched off or
// attacked: a kernel tamper tripwire fired (TW-TAMPER-*), or the sensor
// restarted after being killed (TW-SENS-0001).
func Lost(ruleID string) bool {
	return strings.HasPrefix(ruleID, "TW-TAMPER-") || ruleID == RuleUncleanStop
}

// RuleUncleanStop is the sensor's "restarted after an unclean stop" alert.
const RuleUncleanStop = "TW-SENS-0001"

// Observe counts the alerts of one stored batch from a sensor; campaigns
// it completes are acted on in the background (Wait waits for them). A
// tamper or unclean-stop alert also counts the host's recent RMM alerts,
// whatever their severity (see HostLost).
func (d *Detector) Observe(docs []store.Doc) {
	now := d.o.Now()
	var triggered []trigger
	d.mu.Lock()
	for _, doc := range docs {
		if doc.Kind != event.KindAlert || doc.Origin != store.OriginSensor {
			continue
		}
		if Lost(doc.RuleID) && doc.HostID != "" {
			host, at := doc.HostID, doc.Timestamp
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				d.HostLost(ctx, host, at)
			}()
		}
		// Refused kill-switch commands are attacks on the switch itself;
		// answering them with more automatic commands would be a loop.
		// Ruleset and severity are what ingest read (nested or dotted), so
		// most alerts are decided without decoding the document again
		// (12% of the collector's CPU at full ingest).
		if doc.Ruleset == event.RulesetKillswitch || doc.Severity < d.o.Policy.MinSeverity {
			continue
		}
		var a alertFields
		if json.Unmarshal(doc.JSON, &a) != nil || a.Host.ID == "" {
			continue
		}
		for _, key := range a.keys() {
			hosts := d.seen[key]
			if hosts == nil {
				hosts = map[string]sighting{}
				d.seen[key] = hosts
			}
			hosts[a.Host.ID] = sighting{at: now, alertID: a.Event.ID, product: a.Tillwatch.RMM.Product}
			if t, ok := d.check(key, a.Rule.Name, now); ok {
				triggered = append(triggered, t)
			}
		}
	}
	d.prune(now)
	d.mu.Unlock()
	for _, t := range triggered {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d.act(ctx, t)
		}()
	}
}

// HostLost counts a host whose sensor was switched off or attacked at
// about at (silenced, killed, a tamper tripwire fired): the RMM alerts it
// raised within the window before count toward their campaigns whatever
// their severity, so the fleet response starts even when a till is lost
// before its sensor could say more. The alerts are read from the store,
// so a loss found by any collector (the silence watchdog runs on each)
// counts what the host sent to any of them. Each loss is counted once.
func (d *Detector) HostLost(ctx context.Context, hostID string, at time.Time) {
	if d.o.Store == nil || hostID == "" {
		return
	}
	if at.IsZero() {
		at = d.o.Now()
	}
	d.mu.Lock()
	if prev, ok := d.lost[hostID]; ok && !at.After(prev) {
		d.mu.Unlock()
		return
	}
	d.lost[hostID] = at
	d.mu.Unlock()
	// A minute of slack after the loss: the sensor's clock and the order
	// in which a batch was written are not the collector's.
	raw, err := d.o.Store.QueryAlerts(ctx, store.AlertFilter{HostID: hostID, Since: at.Add(-d.o.Policy.Window), Until: at.Add(time.Minute), Limit: store.MaxAlertLimit})
	if err != nil {
		d.o.Log.Error("campaign: reading the alerts of a lost host failed", "host", hostID, logkey.Error, err)
		return
	}
	now := d.o.Now()
	var triggered []trigger
	d.mu.Lock()
	for _, r := range raw {
		var a alertFields
		if json.Unmarshal(r, &a) != nil || a.Host.ID != hostID || a.Event.Kind != event.KindAlert {
			continue
		}
		if a.Rule.Ruleset != event.RulesetRMM && a.Tillwatch.RMM.Product == "" {
			continue // only what came through the remote-management channel
		}
		for _, key := range a.keys() {
			hosts := d.seen[key]
			if hosts == nil {
				hosts = map[string]sighting{}
				d.seen[key] = hosts
			}
			hosts[hostID] = sighting{at: now, alertID: a.Event.ID, product: a.Tillwatch.RMM.Product}
			if t, ok := d.check(key, a.Rule.Name, now); ok {
				triggered = append(triggered, t)
			}
		}
	}
	d.prune(now)
	d.mu.Unlock()
	if len(triggered) > 0 {
		d.o.Log.Warn("campaign: a lost host's RMM alerts completed a campaign", "host", hostID)
	}
	for _, t := range triggered {
		d.act(ctx, t)
	}
}

// Wait waits for campaign actions in flight (tests, shutdown).
func (d *Detector) Wait() { d.wg.Wait() }

type trigger struct {
	key      string
	ruleName string
	hosts    []string
	alertIDs []string
	product  string
	at       time.Time
}

// check reports a campaign when key has reached K hosts within the window
// and has not fired within the last window.
func (d *Detector) check(key, ruleName string, now time.Time) (trigger, bool) {
	hosts := d.seen[key]
	cut := now.Add(-d.o.Policy.Window)
	var t trigger
	for h, s := range hosts {
		if s.at.Before(cut) {
			continue
		}
		t.hosts = append(t.hosts, h)
		t.alertIDs = append(t.alertIDs, s.alertID)
		if s.product != "" {
			t.product = s.product
		}
	}
	if len(t.hosts) < d.o.Policy.Hosts {
		return t, false
	}
	if last, ok := d.fired[key]; ok && now.Sub(last) < d.o.Policy.Window {
		return t, false
	}
	d.fired[key] = now
	sort.Strings(t.hosts)
	sort.Strings(t.alertIDs)
	t.key, t.ruleName, t.at = key, ruleName, now
	return t, true
}

func (d *Detector) prune(now time.Time) {
	cut := now.Add(-d.o.Policy.Window)
	for key, hosts := range d.seen {
		for h, s := range hosts {
			if s.at.Before(cut) {
				delete(hosts, h)
			}
		}
		if len(hosts) == 0 {
			delete(d.seen, key)
		}
	}
	for key, at := range d.fired {
		if at.Before(cut) {
			delete(d.fired, key)
		}
	}
	for host, at := range d.lost {
		if at.Before(cut.Add(-d.o.Policy.Window)) {
			delete(d.lost, host)
		}
	}
}

// act raises the campaign alert and applies the policy.
func (d *Detector) act(ctx context.Context, t trigger) {
	p := d.o.Policy
	reason := fmt.Sprintf("campaign %s on %d hosts within %s (%s); alerts %s",
		t.key, len(t.hosts), p.Window, strings.Join(t.hosts, ","), strings.Join(t.alertIDs, ","))
	if len(reason) > 2000 {
		reason = reason[:2000] + "…"
	}
	var req *command.Request
	switch p.Action {
	case ActionDisableRMM:
		product := t.product
		if product == "" {
			product = p.Product
		}
		if product == "" {
			product = "*" // every remote-management product on the host
		}
		req = &command.Request{Action: ActionDisableRMM, Targets: p.Targets, Params: map[string]string{"product": product}, Reason: reason, TTL: p.TTL}
	case ActionIsolate:
		req = &command.Request{Action: ActionIsolate, Targets: p.Targets, Reason: reason, TTL: p.TTL}
	}
	outcome := "alert only (policy)"
	var commandID string
	switch {
	case req == nil:
	case p.DryRun:
		outcome = fmt.Sprintf("dry run: would issue %s on %s", req.Action, req.Targets)
	case d.o.Issuer == nil:
		outcome = "no kill-switch on this collector"
	default:
		rec, err := d.o.Issuer.Issue(ctx, command.IssuerCampaign, *req)
		if err != nil {
			outcome = "issuing " + req.Action + " failed: " + err.Error()
			d.o.Log.Error("campaign: automatic command failed", logkey.Action, req.Action, logkey.Error, err)
		} else {
			commandID = rec.ID
			outcome = fmt.Sprintf("issued %s %s on %s (%s)", rec.Action, rec.ID, rec.Targets, rec.State)
		}
	}
	d.o.Log.Warn("campaign detected", "key", t.key, "hosts", t.hosts, "outcome", outcome)
	if d.o.Store == nil {
		return
	}
	a := campaignAlert(t, p, outcome, commandID, req)
	if _, err := watchdog.Raise(ctx, d.o.Store, []event.Event{a}, d.o.Now()); err != nil {
		d.o.Log.Error("campaign: storing the campaign alert failed", logkey.Error, err)
	}
}

func campaignAlert(t trigger, p Policy, outcome, commandID string, req *command.Request) event.Event {
	sum := sha256.Sum256([]byte("campaign|" + t.key + "|" + t.at.UTC().Format(time.RFC3339Nano)))
	what := t.key
	if t.ruleName != "" && strings.HasPrefix(t.key, "rule:") {
		what = fmt.Sprintf("%s (%s)", t.key, t.ruleName)
	}
	a := event.Event{
		Timestamp: t.at.UTC(),
		ECS:       event.ECS{Version: event.ECSVersion},
		Message:   fmt.Sprintf("campaign: %s on %d hosts within %s; %s", what, len(t.hosts), p.Window, outcome),
		Event: event.Meta{
			Kind: event.KindAlert, ID: hex.EncodeToString(sum[:16]), Category: []string{"intrusion_detection"}, Type: []string{"info"},
			Action: "campaign", Severity: 99, RiskScore: 99, Dataset: event.DatasetAlerts, Module: "tillwatch-collector",
			Reason: outcome,
		},
		// The alert is about the fleet; it is filed under the host that
		// completed the campaign.
		Host:  event.Host{ID: t.hosts[len(t.hosts)-1], Name: t.hosts[len(t.hosts)-1]},
		Agent: event.Agent{ID: "tillwatch-collector", Type: event.AgentType, Version: "collector"},
		Rule: &event.Rule{ID: RuleCampaign, Name: "Campaign across the fleet", Ruleset: event.RulesetKillswitch,
			Description: "The same detection, RMM command line or payload hash on several hosts within minutes: a push through the fleet's own management channel."},
		Threat: &event.Threat{Framework: "MITRE ATT&CK",
			Technique: event.Technique{ID: []string{"T1072"}, Name: []string{"Software Deployment Tools"},
				Reference: []string{"https://attack.mitre.org/techniques/T1072/"}},
			Tactic: &event.Tactic{ID: []string{"TA0002"}, Name: []string{"Execution"}}},
		Tillwatch: &event.Tillwatch{Campaign: &event.Campaign{
			Key: t.key, Hosts: t.hosts, Alerts: t.alertIDs, Window: p.Window.String(), Policy: p.Action, DryRun: p.DryRun,
		}},
	}
	if req != nil && commandID != "" {
		a.Tillwatch.KillSwitch = &event.KillSwitch{CommandID: commandID, Action: req.Action}
	}
	return a
}
