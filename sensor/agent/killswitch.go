package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/action"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/fleetcmd"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/rmm"
	"github.com/tillwatch/tillwatch/sensor/uplink"
	yarascan "github.com/tillwatch/tillwatch/sensor/yara"
)

// wireKillSwitch builds the local action executor (always: a disabled RMM
// agent stays disabled across restarts even when the collector is away)
// and, with a collector, the command receiver.
func (s *Sensor) wireKillSwitch(cfg config.Config, cat *rmm.Catalog, eng *yarascan.Engine) error {
	log := s.log.With(logkey.Component, "killswitch")
	var scan func(ctx context.Context, paths []string) ([]string, error)
	if eng != nil {
		scan = func(ctx context.Context, paths []string) ([]string, error) {
			var out []string
			_, err := eng.Sweep(ctx, paths, yarascan.SweepOptions{Threads: 1, CPU: cfg.YARA.SweepCPU}, func(r yarascan.Result, err error) {
				for _, m := range r.Matches {
					out = append(out, r.Path+":"+m.Rule)
				}
			})
			return out, err
		}
	}
	exec, err := action.New(action.Options{
		StateDir: cfg.StateDir, QuarantineDir: cfg.KillSwitch.QuarantineDir, AllowedRoots: cfg.KillSwitch.AllowedRoots,
		Catalog: cat, Approved: cfg.RMM.Approved, CollectorAddrs: collectorAddrs(cfg.Collector, log.Warn),
		ProcRoot: cfg.Process.ProcRoot, Scan: scan, Log: log, Hashes: s.hashes,
	})
	switch {
	case err == nil:
	case exec != nil:
		// Isolation could not be re-applied; the executor still works
		// (release-host in particular), so report and go on.
		s.pipe.Health().Report("killswitch", event.HealthDegraded, err.Error())
	default:
		return cfgfile.Usagef("killswitch: %v", err)
	}
	s.actions = exec
	s.pipe.AddDetector(&disabledRMM{exec: exec})

	if s.uplink == nil || cfg.KillSwitch.Disabled {
		return nil
	}
	var responders, collectors []killswitch.PublicKey
	for _, path := range cfg.KillSwitch.Keys {
		pub, err := killswitch.LoadPublicKey(path)
		if err != nil {
			return cfgfile.Usagef("killswitch.keys: %v", err)
		}
		responders = append(responders, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: strings.TrimSuffix(filepath.Base(path), ".pub")})
	}
	for _, path := range cfg.KillSwitch.CollectorKeys {
		pub, err := killswitch.LoadPublicKey(path)
		if err != nil {
			return cfgfile.Usagef("killswitch.collector_keys: %v", err)
		}
		collectors = append(collectors, killswitch.PublicKey{Role: killswitch.RoleCollector, Key: pub, Name: filepath.Base(path)})
	}
	rcv, err := fleetcmd.New(fleetcmd.Options{
		Link: pinnedLink{Uplink: s.uplink, extra: collectors}, Actions: executorActions{exec},
		HostID: s.hostID, Labels: cfg.Labels, ResponderKeys: responders,
		Policy: killswitch.Policy{Approvals: cfg.KillSwitch.Approvals, MaxHosts: cfg.KillSwitch.MaxHosts,
			BudgetCommands: cfg.KillSwitch.BudgetCommands, BudgetWindow: cfg.KillSwitch.BudgetWindow},
		StateDir: cfg.StateDir, Emit: s.pipe.Emit, Log: s.log, Registerer: s.reg,
	})
	if err != nil {
		return cfgfile.Usagef("killswitch: %v", err)
	}
	s.receiver = rcv
	log.Info("kill-switch on", "responder_keys", len(responders), "approvals", cfg.KillSwitch.Approvals, "max_hosts", cfg.KillSwitch.MaxHosts,
		"budget_commands", cfg.KillSwitch.BudgetCommands, "budget_window", cfg.KillSwitch.BudgetWindow)
	return nil
}

// pinnedLink adds operator-deployed collector keys (rotation) to the one
// pinned at enrolment.
type pinnedLink struct {
	*uplink.Uplink
	extra []killswitch.PublicKey
}

func (l pinnedLink) CollectorKeys() []killswitch.PublicKey {
	return append(l.Uplink.CollectorKeys(), l.extra...)
}

// executorActions adapts the local executor to fleetcmd.Actions.
type executorActions struct{ e *action.Executor }

func (a executorActions) Run(ctx context.Context, c killswitch.Command) killswitch.Result {
	r := a.e.Run(ctx, action.Request{CommandID: c.ID, Action: c.Action, Params: c.Params})
	return killswitch.Result{Status: r.Status, Detail: r.Detail, Affected: r.Affected}
}

// collectorAddrs resolves the collector URL to the addresses isolation must
// never cut. Unresolvable means isolation will be refused, which is said.
func collectorAddrs(c config.Collector, warn func(string, ...any)) []netip.AddrPort {
	if c.Disabled || c.URL == "" {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil
	}
	port := 443
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err == nil {
			port = n
		}
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(a.Unmap(), uint16(port))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		warn("cannot resolve the collector; isolate-host will be refused until the sensor restarts with a resolvable collector",
			logkey.URL, c.URL, logkey.Error, err)
		return nil
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)))
	}
	return out
}

// RuleDisabledRMM is the alert for an RMM agent that started although a
// kill-switch disabled it.
const RuleDisabledRMM = "TW-KS-0002"

var disabledRMMMeta = alert.Meta{
	RuleID: RuleDisabledRMM, RuleName: "Disabled remote-management agent started", Ruleset: event.RulesetKillswitch, Severity: 73,
	Description: "A remote-management agent that a kill-switch command disabled was started again; the sensor killed it on sight.",
	Action:      "disabled-rmm-started",
	Techniques:  []alert.Technique{{ID: "T1219", Name: "Remote Access Software"}},
	Tactic:      &alert.Technique{ID: "TA0011", Name: "Command and Control"},
}

// disabledRMM keeps a disabled agent dead: every exec of a disabled
// product is killed at once. The order came through the kill-switch, so
// it applies in monitor mode too.
type disabledRMM struct{ exec *action.Executor }

func (d *disabledRMM) Name() string { return "killswitch-disabled-rmm" }

func (d *disabledRMM) Detect(ev *event.Event) []pipeline.Detection {
	if ev.Event.Kind != event.KindEvent || ev.Event.Action != "exec" || ev.Process == nil {
		return nil
	}
	product, ok := d.exec.DisabledProduct(ev.Process.Executable, ev.Process.Name)
	if !ok {
		return nil
	}
	result := event.ResultOK
	if err := d.exec.KillDisabled(int(ev.Process.PID)); err != nil {
		result = err.Error()
	}
	a := alert.FromEvent(disabledRMMMeta, ev, fmt.Sprintf("%s (%s, pid %d) started while disabled by the kill-switch; killed",
		product, ev.Process.Executable, ev.Process.PID))
	a.Tillwatch = &event.Tillwatch{
		RMM:      &event.RMM{Product: product},
		Response: &event.Response{Action: event.ActionDisableRMM, Result: result, Target: strconv.FormatInt(ev.Process.PID, 10)},
	}
	return []pipeline.Detection{{Alert: a}}
}
