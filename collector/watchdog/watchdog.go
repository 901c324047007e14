// Package watchdog raises the alerts only the collector can see: a sensor
// that went silent (stopped, masked, killed, cut off) and a sensor whose
// event sequence has holes (events lost on the way). Their event ids are
// derived from what they describe, so several collectors on one store, or
// repeated checks, produce each alert once.
package watchdog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/ingest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Rule ids of the collector's own alerts.
const (
	RuleSilenced   = "TW-COLL-0001"
	RuleEventsLost = "TW-COLL-0002"
	// RuleEnrolConflict is another machine enrolling with an enrolled
	// host's id and another host key.
	RuleEnrolConflict = "TW-COLL-0004"
)

// EnrolConflict returns the alert for a refused enrolment of h's host id
// with another host key from remote: someone with an enrolment token
// tried to take over h's identity (or h was reinstalled without a
// host-specific token). One alert per host and remote per minute.
func EnrolConflict(h api.Host, remote string, now time.Time) event.Event {
	a := base(h, now, "enrol-conflict|"+h.HostID+"|"+remote+"|"+now.UTC().Truncate(time.Minute).Format(time.RFC3339))
	a.Message = fmt.Sprintf("refused an enrolment as %s (%s) from %s: the host id is bound to another host key. "+
		"Another machine with an enrolment token claims to be this host; if the till was reinstalled, enrol it with "+
		"`tillwatch-collector token create --role sensor --host %s`", h.HostID, h.HostName, remote, h.HostID)
	a.Event.Action = "sensor-enrol-conflict"
	a.Event.Category, a.Event.Type = []string{"iam"}, []string{"denied"}
	a.Event.Severity, a.Event.RiskScore = 90, 90
	a.Rule = &event.Rule{ID: RuleEnrolConflict, Name: "Enrolment as another host refused", Ruleset: event.RulesetIntegrity,
		Description: "An enrolment claimed an enrolled host's id with another host key: an attempt to impersonate a till."}
	a.Threat.Technique = event.Technique{ID: []string{"T1078"}, Name: []string{"Valid Accounts"},
		Reference: []string{"https://attack.mitre.org/techniques/T1078/"}}
	return a
}

// Silenced returns the alert for a host not heard from since h.LastSeen.
func Silenced(h api.Host, silentFor time.Duration, now time.Time) event.Event {
	a := base(h, now, "silenced|"+h.HostID+"|"+h.LastSeen.UTC().Format(time.RFC3339Nano))
	a.Message = fmt.Sprintf("sensor %s (%s) silent for %s: last heard from at %s; it was stopped, killed, cut off or the host is down",
		h.HostID, h.HostName, silentFor.Round(time.Second), h.LastSeen.UTC().Format(time.RFC3339))
	a.Event.Action = "sensor-silenced"
	a.Event.Severity, a.Event.RiskScore = 73, 73
	a.Rule = &event.Rule{ID: RuleSilenced, Name: "Sensor silenced", Ruleset: event.RulesetIntegrity,
		Description: "A sensor stopped sending heartbeats. Attackers stop or kill endpoint sensors before they act."}
	a.Threat.Technique = event.Technique{ID: []string{"T1562.001"}, Name: []string{"Impair Defenses: Disable or Modify Tools"},
		Reference: []string{"https://attack.mitre.org/techniques/T1562/001/"}}
	return a
}

// EventsLost returns the alert for a gap in a host's event sequence.
func EventsLost(h api.Host, gap store.SequenceGap, now time.Time) event.Event {
	a := base(h, now, fmt.Sprintf("gap|%s|%d|%d", h.HostID, gap.From, gap.To))
	n := gap.To - gap.From + 1
	a.Message = fmt.Sprintf("sensor %s (%s) lost %d events: sequence %d to %d never arrived", h.HostID, h.HostName, n, gap.From, gap.To)
	a.Event.Action = "sensor-events-lost"
	a.Event.Severity, a.Event.RiskScore = 47, 47
	a.Rule = &event.Rule{ID: RuleEventsLost, Name: "Sensor lost events", Ruleset: event.RulesetIntegrity,
		Description: "Events of a sensor never reached the collector (spool corruption, tampering, a full disk)."}
	a.Threat.Technique = event.Technique{ID: []string{"T1562.006"}, Name: []string{"Impair Defenses: Indicator Blocking"},
		Reference: []string{"https://attack.mitre.org/techniques/T1562/006/"}}
	return a
}

func base(h api.Host, now time.Time, key string) event.Event {
	sum := sha256.Sum256([]byte(key))
	name := h.HostName
	if name == "" {
		name = h.HostID
	}
	return event.Event{
		Timestamp: now.UTC(),
		ECS:       event.ECS{Version: event.ECSVersion},
		Event: event.Meta{
			Kind: event.KindAlert, ID: hex.EncodeToString(sum[:16]), Category: []string{"host"}, Type: []string{"info"},
			Dataset: event.DatasetAlerts, Module: "tillwatch-collector",
		},
		// The alert is about the sensor, so it carries the sensor's identity.
		Host:   event.Host{ID: h.HostID, Name: name},
		Agent:  event.Agent{ID: h.AgentID, Type: event.AgentType, Version: h.AgentVersion},
		Labels: h.Labels,
		Threat: &event.Threat{Framework: "MITRE ATT&CK", Tactic: &event.Tactic{ID: []string{"TA0005"}, Name: []string{"Defense Evasion"}}},
	}
}

// Store is what the watchdog needs of the store.
type Store interface {
	Hosts(ctx context.Context) ([]api.Host, error)
	Ingest(ctx context.Context, docs []store.Doc) (accepted, duplicates int, err error)
}

// Raise stores alerts (deduplicated by their derived ids) and returns how
// many were new.
func Raise(ctx context.Context, st Store, alerts []event.Event, now time.Time) (int, error) {
	docs := make([]store.Doc, 0, len(alerts))
	for _, a := range alerts {
		if a.Agent.Version == "" {
			a.Agent.Version = "unknown" // a host that never sent a heartbeat
		}
		line, err := json.Marshal(a)
		if err != nil {
			return 0, err
		}
		doc, err := ingest.ParseLine(line, a.Host.ID, now)
		if err != nil {
			return 0, fmt.Errorf("watchdog alert %s: %w", a.Rule.ID, err)
		}
		doc.Origin = store.OriginCollector
		docs = append(docs, doc)
	}
	accepted, _, err := st.Ingest(ctx, docs)
	return accepted, err
}

// Options configure the silence watchdog.
type Options struct {
	// SilenceAfter is how long a sensor may stay unheard before it counts
	// as silenced (default 5m: ten missed 30 s heartbeats).
	SilenceAfter time.Duration
	// Interval is how often hosts are checked (default SilenceAfter/5).
	Interval   time.Duration
	Now        func() time.Time
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// OnSilenced is told about each host found silenced, once per silence
	// (the campaign detector counts a till lost after an RMM alert).
	OnSilenced func(ctx context.Context, h api.Host)
}

// Run checks every Interval for silenced sensors until ctx is done.
func Run(ctx context.Context, st Store, o Options) {
	if o.SilenceAfter <= 0 {
		o.SilenceAfter = 5 * time.Minute
	}
	if o.Interval <= 0 {
		o.Interval = o.SilenceAfter / 5
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	raised := prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_collector_sensors_silenced_total", Help: "Sensor-silenced alerts raised."})
	if o.Registerer != nil {
		o.Registerer.MustRegister(raised)
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	told := map[string]time.Time{} // host -> the LastSeen of the silence OnSilenced was told of
	for {
		silent, n, err := checkSilenced(ctx, st, o.SilenceAfter, o.Now())
		if err != nil && ctx.Err() == nil {
			o.Log.Warn("watchdog: cannot check for silenced sensors", logkey.Error, err)
		}
		if n > 0 {
			raised.Add(float64(n))
			o.Log.Warn("sensors silenced", logkey.Count, n)
		}
		if o.OnSilenced != nil {
			now := map[string]time.Time{}
			for _, h := range silent {
				now[h.HostID] = h.LastSeen
				if last, ok := told[h.HostID]; !ok || !last.Equal(h.LastSeen) {
					o.OnSilenced(ctx, h)
				}
			}
			told = now // a host heard from again leaves the list
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckSilenced raises a silenced alert for every host unheard for longer
// than after; it returns how many were new.
func CheckSilenced(ctx context.Context, st Store, after time.Duration, now time.Time) (int, error) {
	_, n, err := checkSilenced(ctx, st, after, now)
	return n, err
}

// checkSilenced is CheckSilenced that also returns the silenced hosts.
func checkSilenced(ctx context.Context, st Store, after time.Duration, now time.Time) ([]api.Host, int, error) {
	hosts, err := st.Hosts(ctx)
	if err != nil {
		return nil, 0, err
	}
	var alerts []event.Event
	var silent []api.Host
	for _, h := range hosts {
		if d := now.Sub(h.LastSeen); d > after {
			alerts = append(alerts, Silenced(h, d, now))
			silent = append(silent, h)
		}
	}
	if len(alerts) == 0 {
		return nil, 0, nil
	}
	n, err := Raise(ctx, st, alerts, now)
	return silent, n, err
}
