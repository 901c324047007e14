package console

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// Till states, as the stores page shows them. A till can be in several at
// once; its headline state is the first that applies in this order, which
// puts what needs a person first.
const (
	StateAlerting      = "alerting"       // an alert in the window the sensor did not stop
	StateSilenced      = "silenced"       // no heartbeat or event for SilenceAfter
	StateIsolated      = "isolated"       // its last isolate-host/release-host that succeeded was isolate-host
	StateAttackStopped = "attack-stopped" // alerts in the window, every one stopped by the sensor
	StateRMMDisabled   = "rmm-disabled"   // its last disable-rmm/enable-rmm that succeeded was disable-rmm
	StateDegraded      = "degraded"       // a sensor component reports degraded or failed
	StateProtected     = "protected"      // none of the above
)

// States lists every state in headline order.
var States = []string{StateAlerting, StateSilenced, StateIsolated, StateAttackStopped, StateRMMDisabled, StateDegraded, StateProtected}

// alertLite is the part of an alert document the console reads to list and
// classify it; the full document is passed through untouched on the alert
// page.
type alertLite struct {
	Timestamp time.Time `json:"@timestamp"`
	Event     struct {
		ID       string `json:"id"`
		Severity int    `json:"severity"`
	} `json:"event"`
	Host struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"host"`
	Rule *struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Ruleset string `json:"ruleset"`
	} `json:"rule"`
	Process *struct {
		Name string `json:"name"`
	} `json:"process"`
	Tillwatch *struct {
		Response   *event.Response `json:"response"`
		Ransomware *struct {
			Stopped     []int    `json:"stopped"`
			Quarantined []string `json:"quarantined"`
		} `json:"ransomware"`
	} `json:"tillwatch"`
}

func parseAlert(raw json.RawMessage) (alertLite, error) {
	var a alertLite
	err := json.Unmarshal(raw, &a)
	return a, err
}

// integrity alerts are about the sensor itself (silenced, events lost,
// tampering): they show as silenced or degraded, not as an attack.
func (a alertLite) integrity() bool {
	return a.Rule != nil && a.Rule.Ruleset == event.RulesetIntegrity
}

// stopped reports whether the sensor stopped what the alert is about: a
// stopping response that succeeded, or the file guard's synchronous stop
// (store.StoppingActions; the stores count the same way).
func (a alertLite) stopped() bool {
	if a.Tillwatch == nil {
		return false
	}
	if r := a.Tillwatch.Response; r != nil && slices.Contains(store.StoppingActions, r.Action) && r.Result == event.ResultOK {
		return true
	}
	if rw := a.Tillwatch.Ransomware; rw != nil && len(rw.Stopped) > 0 {
		return true
	}
	return false
}

// facts is what the console knows about one till when it derives states.
type facts struct {
	Host        api.Host
	Alerts      int // attack alerts in the window
	Unstopped   int // of which the sensor did not stop
	Isolated    bool
	RMMDisabled bool
}

// deriveStates returns every state that applies, headline first; never
// empty.
func deriveStates(f facts, now time.Time, silenceAfter time.Duration) []string {
	var out []string
	if f.Unstopped > 0 {
		out = append(out, StateAlerting)
	}
	if now.Sub(f.Host.LastSeen) > silenceAfter {
		out = append(out, StateSilenced)
	}
	if f.Isolated {
		out = append(out, StateIsolated)
	}
	if f.Alerts > 0 && f.Unstopped == 0 {
		out = append(out, StateAttackStopped)
	}
	if f.RMMDisabled {
		out = append(out, StateRMMDisabled)
	}
	for _, st := range f.Host.Health {
		if st != event.HealthOK {
			out = append(out, StateDegraded)
			break
		}
	}
	if len(out) == 0 {
		out = append(out, StateProtected)
	}
	return out
}

// toggles are the kill-switch actions that put a till into a lasting state
// and the ones that take it out again.
var toggles = map[string]struct {
	on    bool
	isRMM bool
}{
	killswitch.ActionIsolateHost: {on: true},
	killswitch.ActionReleaseHost: {on: false},
	killswitch.ActionDisableRMM:  {on: true, isRMM: true},
	killswitch.ActionEnableRMM:   {on: false, isRMM: true},
}

// hostToggle is one till's latest successful toggle of each kind.
type hostToggle struct {
	isolatedAt, rmmAt time.Time
	isolated, rmmOff  bool
}

// apply records a successful acknowledgement of action at t, keeping the
// latest per kind.
func (h *hostToggle) apply(action string, t time.Time) {
	tg, ok := toggles[action]
	if !ok {
		return
	}
	if tg.isRMM {
		if t.After(h.rmmAt) {
			h.rmmAt, h.rmmOff = t, tg.on
		}
		return
	}
	if t.After(h.isolatedAt) {
		h.isolatedAt, h.isolated = t, tg.on
	}
}
