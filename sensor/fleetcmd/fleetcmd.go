// Package fleetcmd is the sensor's end of the kill-switch: it long-polls
// the collector for commands, verifies each one against the keys this
// sensor pins (signatures before parsing, then addressing, validity and
// approvals), refuses replays with a durable cache, carries out what passes
// through the local action executor, and acknowledges every command with a
// typed result. A refused command is also an alert (rule.ruleset
// killswitch), so an attack on the switch itself reaches the SOC.
package fleetcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Link is the collector connection fleetcmd needs (sensor/uplink).
type Link interface {
	PollCommands(ctx context.Context, wait time.Duration) ([]killswitch.Signed, error)
	AckCommand(ctx context.Context, id string, r killswitch.Result) error
	// CollectorKeys are the collector keys pinned at enrolment.
	CollectorKeys() []killswitch.PublicKey
}

// Actions carries out a verified command (sensor/action).
type Actions interface {
	Run(ctx context.Context, c killswitch.Command) killswitch.Result
}

// Options configure a Receiver.
type Options struct {
	Link    Link
	Actions Actions
	HostID  string
	Labels  map[string]string
	// ResponderKeys are pinned from files the operator deployed
	// (--killswitch-key); the collector never supplies them.
	ResponderKeys []killswitch.PublicKey
	Policy        killswitch.Policy
	// StateDir holds the replay cache.
	StateDir string
	// Emit receives the alert about a refused command.
	Emit func(event.Event)
	// Wait is the long-poll duration (default api.DefaultCommandWait).
	Wait       time.Duration
	Now        func() time.Time
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// ReplayFile is the replay cache's name in the state dir.
const ReplayFile = "killswitch-replay.json"

// LedgerFile is the per-key budget ledger's name in the state dir.
const LedgerFile = "killswitch-budget.json"

// Receiver runs the command loop.
type Receiver struct {
	o      Options
	replay *killswitch.ReplayCache
	ledger *killswitch.Ledger

	mu      sync.Mutex
	alerted map[string]time.Time // digest of refused envelopes already reported

	handled *prometheus.CounterVec
}

// New opens the replay cache; a corrupt cache is an error (see
// killswitch.OpenReplayCache).
func New(o Options) (*Receiver, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With(logkey.Component, "killswitch")
	if o.Wait <= 0 {
		o.Wait = 25 * time.Second
	}
	rc, err := killswitch.OpenReplayCache(filepath.Join(o.StateDir, ReplayFile), o.Now)
	if err != nil {
		return nil, err
	}
	lg, err := killswitch.OpenLedger(filepath.Join(o.StateDir, LedgerFile), o.Now)
	if err != nil {
		return nil, err
	}
	r := &Receiver{o: o, replay: rc, ledger: lg, alerted: map[string]time.Time{}}
	r.handled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tillwatch_sensor", Name: "killswitch_commands_total",
		Help: "Kill-switch commands handled, by result status (ok, noop, failed, refused).",
	}, []string{"status"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(r.handled); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Run polls until ctx ends. Failures back off with jitter (1 s doubling to
// 60 s, ±50 %) so a collector restart does not bring a fleet back in the
// same second.
func (r *Receiver) Run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		cmds, err := r.o.Link.PollCommands(ctx, r.o.Wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := jitter(backoff)
			r.o.Log.Debug("kill-switch poll failed; retrying", logkey.Error, err, logkey.Duration, d)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		for i := range cmds {
			r.Handle(ctx, &cmds[i])
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// Handle verifies, acts on and acknowledges one delivered command. It is
// exported so tests drive it without a collector.
func (r *Receiver) Handle(ctx context.Context, s *killswitch.Signed) killswitch.Result {
	keys, err := r.keySet()
	if err != nil {
		r.o.Log.Error("kill-switch: pinned keys unusable", logkey.Error, err)
		return killswitch.Result{Status: killswitch.StatusFailed, Detail: err.Error()}
	}
	v := &killswitch.Verifier{Keys: keys, Policy: r.o.Policy, HostID: r.o.HostID, Labels: r.o.Labels, Now: r.o.Now}
	c, signers, err := v.Verify(s)
	if err == nil {
		var prev *killswitch.Result
		prev, err = r.replay.Check(&c, s.Payload)
		if err == nil && prev != nil {
			// A redelivery: the collector did not get our answer.
			r.ack(ctx, c.ID, *prev)
			return *prev
		}
	}
	if err != nil {
		return r.refuse(ctx, s, err)
	}
	// The per-key budget is spent before acting and durably: a key that
	// ordered its share on this host is refused here even when the
	// collector that delivered the command kept no count.
	if keys, single := r.o.Policy.SingleKey(&c, signers); single {
		if err := r.ledger.Charge(&c, keys, r.o.Policy); err != nil {
			if _, ok := killswitch.IsRefused(err); ok {
				return r.refuse(ctx, s, err)
			}
			res := killswitch.Result{Status: killswitch.StatusFailed, Detail: "cannot record the key's budget before acting: " + err.Error()}
			r.ack(ctx, c.ID, res)
			return res
		}
	}
	if err := r.replay.Record(&c, s.Payload, killswitch.Result{Status: killswitch.StatusStarted}); err != nil {
		// Without a durable record the command could be replayed later:
		// do not act.
		res := killswitch.Result{Status: killswitch.StatusFailed, Detail: "cannot record the command before acting: " + err.Error()}
		r.ack(ctx, c.ID, res)
		return res
	}
	r.o.Log.Warn("kill-switch command accepted", logkey.Command, c.ID, logkey.Action, c.Action,
		"issuer", c.Issuer, "reason", c.Reason, "collector_signers", len(signers.Collector), "responder_signers", len(signers.Responders))
	res := r.o.Actions.Run(ctx, c)
	if err := r.replay.Record(&c, s.Payload, res); err != nil {
		r.o.Log.Error("kill-switch: could not record the result", logkey.Command, c.ID, logkey.Error, err)
	}
	r.o.Log.Warn("kill-switch command carried out", logkey.Command, c.ID, logkey.Action, c.Action,
		logkey.Status, res.Status, "detail", res.Detail, "affected", res.Affected)
	r.ack(ctx, c.ID, res)
	return res
}

func (r *Receiver) keySet() (*killswitch.KeySet, error) {
	keys := append([]killswitch.PublicKey{}, r.o.Link.CollectorKeys()...)
	for _, k := range keys {
		if k.Role != killswitch.RoleCollector {
			return nil, fmt.Errorf("pinned collector key %s has role %q", k.ID, k.Role)
		}
	}
	return killswitch.NewKeySet(append(keys, r.o.ResponderKeys...)...)
}

// refuse reports a refused command: once as an alert (a redelivered bad
// command does not flood the SOC) and always as an acknowledgement when
// its id can be read, so the collector stops redelivering it.
func (r *Receiver) refuse(ctx context.Context, s *killswitch.Signed, err error) killswitch.Result {
	re, ok := killswitch.IsRefused(err)
	if !ok {
		re = &killswitch.RefusedError{Reason: killswitch.RefuseMalformed, Detail: err.Error()}
	}
	res := killswitch.Result{Status: killswitch.StatusRefused, Refusal: re.Reason, Detail: re.Detail}
	id := re.CommandID
	if id == "" {
		id = unverifiedID(s.Payload)
	}
	r.o.Log.Warn("kill-switch command refused", logkey.Command, id, logkey.Reason, re.Reason, "detail", re.Detail)
	if r.firstRefusal(s) && r.o.Emit != nil {
		r.o.Emit(refusalAlert(r.o.Now(), id, unverifiedAction(s.Payload), re))
	}
	if id != "" {
		r.ack(ctx, id, res)
	} else {
		r.handled.WithLabelValues(res.Status).Inc()
	}
	return res
}

func (r *Receiver) firstRefusal(s *killswitch.Signed) bool {
	b, _ := json.Marshal(s)
	key := string(b)
	if len(key) > 512 {
		key = key[:512] // the signatures sit at the end; the payload start names the command
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	for k, t := range r.alerted {
		if now.Sub(t) > time.Hour {
			delete(r.alerted, k)
		}
	}
	if _, seen := r.alerted[key]; seen {
		return false
	}
	if len(r.alerted) < 10000 {
		r.alerted[key] = now
	}
	return true
}

// unverifiedID reads the id out of a payload no pinned key vouched for,
// only to tell the collector which command was refused.
func unverifiedID(payload []byte) string {
	var p struct{ ID string }
	if json.Unmarshal(payload, &p) != nil || len(p.ID) > 64 {
		return ""
	}
	return p.ID
}

func unverifiedAction(payload []byte) string {
	var p struct{ Action string }
	if json.Unmarshal(payload, &p) != nil || len(p.Action) > 64 {
		return ""
	}
	return p.Action
}

func (r *Receiver) ack(ctx context.Context, id string, res killswitch.Result) {
	r.handled.WithLabelValues(res.Status).Inc()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := r.o.Link.AckCommand(actx, id, res); err != nil {
		// The collector redelivers an unacknowledged command; the replay
		// cache then answers with this same result.
		r.o.Log.Warn("kill-switch acknowledgement failed; it is sent again on redelivery", logkey.Command, id, logkey.Error, err)
	}
}

// Refusal alert rule.
const (
	RuleRefused     = "TW-KS-0001"
	ruleRefusedName = "Kill-switch command refused"
)

var refusedMeta = alert.Meta{
	RuleID: RuleRefused, RuleName: ruleRefusedName, Ruleset: event.RulesetKillswitch, Severity: 73,
	Description: "The sensor refused a fleet command: unsigned, wrongly signed, signed by an unpinned key, expired, not yet valid, replayed, misaddressed, unknown, under-approved or over one key's budget. Someone may be trying to abuse the kill-switch channel.",
	Action:      "killswitch-refused",
	// Abusing the fleet's management channel is T1072, Software Deployment Tools.
	Techniques: []alert.Technique{{ID: "T1072", Name: "Software Deployment Tools"}},
	Tactic:     &alert.Technique{ID: "TA0002", Name: "Execution"},
}

func refusalAlert(now time.Time, id, action string, re *killswitch.RefusedError) event.Event {
	src := event.Event{Timestamp: now.UTC(), Event: event.Meta{Category: []string{"intrusion_detection"}, Type: []string{"denied"}}}
	a := alert.FromEvent(refusedMeta, &src, fmt.Sprintf("refused kill-switch command %s: %s (%s)", orUnknown(id), re.Reason, re.Detail))
	a.Event.Outcome = "failure"
	a.Tillwatch = &event.Tillwatch{KillSwitch: &event.KillSwitch{
		CommandID: id, Action: action, Status: killswitch.StatusRefused, Refusal: re.Reason, Detail: re.Detail,
	}}
	return a
}

func orUnknown(s string) string {
	if s == "" {
		return "(unreadable id)"
	}
	return s
}
