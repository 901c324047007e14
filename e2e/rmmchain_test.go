package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	sim "github.com/tillwatch/tillwatch/sim/rmmchain"
)

// rmmChainRun is one `tillwatch simulate rmm-chain` under a real sensor.
type rmmChainRun struct {
	dir, agent, marker string
	alertsOut          string
	out                result
	alerts             []map[string]any // RMM-lineage alerts below this run's agent
}

// load re-reads the RMM-lineage alerts about this run's agent.
func (r *rmmChainRun) load(t *testing.T) {
	t.Helper()
	raw, _ := os.ReadFile(r.alertsOut)
	r.alerts = r.alerts[:0]
	for _, a := range jsonLines(t, string(raw)) {
		if get(a, "rule.ruleset") == event.RulesetRMM && get(a, "tillwatch.rmm.agent_executable") == r.agent {
			r.alerts = append(r.alerts, a)
		}
	}
}

// runRmmChain starts the sensor in mode (the stand-in agent approved, as
// the Kaseya agent was), runs the simulator and collects the RMM alerts
// about its agent. The tests do not run in parallel: a sensor watches every
// process of the host, so an enforcing sensor would stop another test's chain.
func runRmmChain(t *testing.T, mode string) rmmChainRun {
	t.Helper()
	requireRoot(t)
	work := t.TempDir()
	cfg := filepath.Join(work, "sensor.yaml")
	if err := os.WriteFile(cfg, []byte("rmm:\n  approved: ["+sim.Product+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	alertsOut := filepath.Join(work, "alerts.ndjson")
	sensor := start(t, "tillwatch-sensor", "run", "--config", cfg, "--no-collector", "--mode", mode,
		"--state-dir", filepath.Join(work, "state"), "--spool", filepath.Join(work, "spool"),
		"--alerts-out", alertsOut, "--process-backend", "netlink", "--metrics-listen", "")
	eventually(t, sensorStart, "the process source", func() bool { return strings.Contains(sensor.output(), "process source running") })

	r := rmmChainRun{dir: filepath.Join(work, "sim"), alertsOut: alertsOut}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.agent = filepath.Join(r.dir, sim.RootName, "opt", "kaseya", sim.AgentName)
	r.marker = filepath.Join(r.dir, sim.RootName, "kworking", sim.MarkerName)
	t.Cleanup(func() { run(t, "tillwatch", "simulate", "rmm-chain", "--dir", r.dir, "--undo") })
	// --hold 1s: the decoder must still be in /proc when the sensor reads
	// its exec; on a busy 2-core machine that read can lag by a few hundred
	// milliseconds (docs/benchmarks.md, RMM detection latency).
	r.out = run(t, "tillwatch", "simulate", "rmm-chain", "--dir", r.dir, "--hold", "1s")
	if r.out.code != 0 {
		t.Fatalf("simulate rmm-chain: exit %d\n%s%s", r.out.code, r.out.stdout, r.out.stderr)
	}
	t.Logf("simulator: %s", strings.TrimSpace(r.out.stdout))
	eventually(t, 15*time.Second, "an RMM decode alert below the stand-in agent", func() bool {
		r.load(t)
		return ruleOf(r.alerts, "TW-RMM-0101") != nil
	})
	return r
}

func ruleOf(alerts []map[string]any, id string) map[string]any {
	for _, a := range alerts {
		if get(a, "rule.id") == id {
			return a
		}
	}
	return nil
}

func TestRmmChainEnforceKillsBeforePayload(t *testing.T) {
	r := runRmmChain(t, "enforce")
	a := ruleOf(r.alerts, "TW-RMM-0101")
	if got := get(a, "tillwatch.rmm.product"); got != sim.Product {
		t.Errorf("tillwatch.rmm.product = %v, want %s", got, sim.Product)
	}
	if got := get(a, "tillwatch.rmm.effective_name"); got != "/usr/bin/base64" {
		t.Errorf("tillwatch.rmm.effective_name = %v: the renamed decoder not recognised as base64", got)
	}
	if get(a, "tillwatch.response.action") != event.ActionKill || get(a, "tillwatch.response.result") != "ok" {
		t.Errorf("response %v / %v, want kill / ok", get(a, "tillwatch.response.action"), get(a, "tillwatch.response.result"))
	}
	anc, _ := get(a, "tillwatch.process.ancestry").([]any)
	reached := false
	for _, x := range anc {
		if m, _ := x.(map[string]any); m != nil && m["executable"] == r.agent {
			reached = true
		}
	}
	if !reached {
		t.Errorf("tillwatch.process.ancestry does not reach the agent %s: %v", r.agent, anc)
	}
	// The chain was killed at the decode step: the payload never ran.
	if _, err := os.Lstat(r.marker); err == nil {
		t.Errorf("the payload ran in enforce mode: %s exists", r.marker)
	}
	if ruleOf(r.alerts, "TW-RMM-0102") != nil {
		t.Error("the decoded payload was run (TW-RMM-0102) although the decode was answered with kill")
	}
	if !strings.Contains(r.out.stdout, "stopped before its payload ran") {
		t.Errorf("simulator verdict: %s", r.out.stdout)
	}

	undo := run(t, "tillwatch", "simulate", "rmm-chain", "--dir", r.dir, "--undo")
	if undo.code != 0 {
		t.Fatalf("undo: exit %d %s", undo.code, undo.stderr)
	}
	if left, _ := os.ReadDir(r.dir); len(left) != 0 {
		t.Errorf("undo left %d entries in %s, e.g. %s", len(left), r.dir, left[0].Name())
	}
}

// The control: without enforcement the payload runs, which proves the test
// above can see the difference, and the alerts are raised all the same.
func TestRmmChainMonitorLetsPayloadRun(t *testing.T) {
	r := runRmmChain(t, "monitor")
	if _, err := os.Lstat(r.marker); err != nil {
		t.Fatalf("monitor mode: the payload did not run (%v); simulator said %s", err, r.out.stdout)
	}
	a := ruleOf(r.alerts, "TW-RMM-0101")
	if get(a, "tillwatch.response.action") != event.ActionNone || get(a, "tillwatch.response.result") != "monitor mode: would kill" {
		t.Errorf("monitor mode: response %v, want none / monitor mode: would kill", get(a, "tillwatch.response"))
	}
	eventually(t, 10*time.Second, "TW-RMM-0102 for the decoded payload being run", func() bool {
		r.load(t)
		return ruleOf(r.alerts, "TW-RMM-0102") != nil
	})
	undo := run(t, "tillwatch", "simulate", "rmm-chain", "--dir", r.dir, "--undo")
	if left, _ := os.ReadDir(r.dir); undo.code != 0 || len(left) != 0 {
		t.Errorf("undo: exit %d %s, %d entries left", undo.code, undo.stderr, len(left))
	}
}
