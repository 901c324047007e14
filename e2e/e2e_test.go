package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// requiredAlertFields are the required fields (docs/reference.md) for an alert about a
// process (process.hash.sha256 is readable for our payload).
var requiredAlertFields = []string{
	"@timestamp", "event.kind", "event.id", "event.category", "event.type", "event.action",
	"event.severity", "event.risk_score", "rule.id", "rule.name", "rule.ruleset",
	"host.id", "host.name", "agent.id", "agent.type", "agent.version",
	"threat.framework", "threat.technique.id",
	"process.pid", "process.name", "process.executable", "process.command_line",
	"process.parent.pid", "process.parent.name", "process.parent.executable", "process.hash.sha256",
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (process connector, kill); CI runs as root")
	}
}

// TestTillToSOC is the foundation's acceptance test: a real collector, a
// real enrolled sensor, a real process the first detector flags, and the
// alert found through `tillwatch alerts --json` with every required field.
func TestTillToSOC(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	c := startCollector(t, filepath.Join(work, "collector"), freeAddr(t))
	sensorTok := c.tokenFile(t, "sensor", work)
	analystTok := c.tokenFile(t, "analyst", work)
	alertsOut := filepath.Join(work, "alerts.ndjson")
	hostID := "e2e-till-" + itoa(os.Getpid())

	sensor := start(t, "tillwatch-sensor", "run",
		"--collector", c.url, "--ca", c.ca, "--enroll-token", sensorTok,
		"--state-dir", filepath.Join(work, "sensor"), "--spool", filepath.Join(work, "spool"),
		"--host-id", hostID, "--watch", work, "--alerts-out", alertsOut,
		"--mode", "enforce", "--process-backend", "netlink", "--metrics-listen", "", "--log-format", "json")

	eventually(t, 30*time.Second, "the sensor to enrol", func() bool {
		r := c.cli(t, analystTok, "hosts", "--json")
		return r.code == 0 && strings.Contains(r.stdout, hostID)
	})
	eventually(t, sensorStart, "the process source to run", func() bool {
		return strings.Contains(sensor.output(), "process source running")
	})

	// The attack: a payload dropped into shared memory and run by this test.
	exe := payload(t, shmDir(t))
	cmd := exec.Command(exe, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var alert map[string]any
	eventually(t, 30*time.Second, "the alert through `tillwatch alerts --json`", func() bool {
		r := c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001", "--since", "10m")
		if r.code != 0 {
			t.Logf("tillwatch alerts: exit %d: %s", r.code, r.stderr)
			return false
		}
		for _, a := range jsonLines(t, r.stdout) {
			if get(a, "process.executable") == exe {
				alert = a
				return true
			}
		}
		return false
	})

	for _, f := range requiredAlertFields {
		if v := get(alert, f); v == nil || v == "" {
			t.Errorf("alert lacks required field %s", f)
		}
	}
	checks := map[string]any{
		"event.kind": "alert", "agent.type": event.AgentType, "host.id": hostID, "rule.ruleset": "sigma",
		"threat.framework": "MITRE ATT&CK", "tillwatch.response.action": "kill", "tillwatch.response.result": "ok",
	}
	for f, want := range checks {
		if got := get(alert, f); got != want {
			t.Errorf("%s = %v, want %v", f, got, want)
		}
	}
	if pidOf(get(alert, "process.pid")) != cmd.Process.Pid || pidOf(get(alert, "process.parent.pid")) != os.Getpid() {
		t.Errorf("process %v / parent %v, want %d / %d", get(alert, "process.pid"), get(alert, "process.parent.pid"), cmd.Process.Pid, os.Getpid())
	}
	if s, _ := get(alert, "process.hash.sha256").(string); len(s) != 64 {
		t.Errorf("process.hash.sha256 = %q", s)
	}
	// The chain reaches back past the test process to its own parents.
	anc, _ := get(alert, "tillwatch.process.ancestry").([]any)
	if len(anc) < 2 || pidOf(anc[0].(map[string]any)["pid"]) != os.Getpid() {
		t.Errorf("ancestry %v does not start at the test process %d and go further", anc, os.Getpid())
	}

	// Enforce mode stopped the payload.
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			t.Errorf("payload ended with %v, want killed by a signal", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("payload still running 10s after the sensor reported killing it")
	}

	// The same alert, same id, in the local NDJSON sink.
	raw, err := os.ReadFile(alertsOut)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), alert["event"].(map[string]any)["id"].(string)) {
		t.Errorf("--alerts-out lacks the alert's event.id")
	}

	// The host is listed with its heartbeat and alert count.
	hosts := jsonLines(t, c.cli(t, analystTok, "hosts", "--json").stdout)
	var found bool
	for _, h := range hosts {
		if h["host_id"] == hostID {
			found = true
			if n, _ := h["alert_count"].(float64); n < 1 {
				t.Errorf("host alert_count = %v", h["alert_count"])
			}
		}
	}
	if !found {
		t.Errorf("host %s not listed", hostID)
	}
	table := c.cli(t, analystTok, "alerts", "--host", hostID)
	if table.code != 0 || !strings.Contains(table.stdout, "TW-EXEC-0001") || !strings.Contains(table.stdout, "RULE NAME") {
		t.Errorf("readable table: %d %q", table.code, table.stdout)
	}

	if err := sensor.stop(); err != nil {
		t.Errorf("sensor did not exit cleanly on SIGTERM: %v", err)
	}
}

// TestAlertRaisedWhileCollectorDownArrivesLater: the till keeps protecting
// itself and keeps the alert until the collector is back.
func TestAlertRaisedWhileCollectorDownArrivesLater(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	addr := freeAddr(t)
	c := startCollector(t, filepath.Join(work, "collector"), addr)
	sensorTok := c.tokenFile(t, "sensor", work)
	analystTok := c.tokenFile(t, "analyst", work)
	if err := c.p.stop(); err != nil {
		t.Fatalf("collector stop: %v", err)
	}
	hostID := "e2e-offline-" + itoa(os.Getpid())
	sensor := start(t, "tillwatch-sensor", "run",
		"--collector", c.url, "--ca", c.ca, "--enroll-token", sensorTok,
		"--state-dir", filepath.Join(work, "sensor"), "--host-id", hostID,
		"--mode", "enforce", "--metrics-listen", "")
	eventually(t, 15*time.Second, "one clear line about the unreachable collector", func() bool {
		return strings.Contains(sensor.output(), "collector unreachable; running locally")
	})
	eventually(t, sensorStart, "the process source to run", func() bool {
		return strings.Contains(sensor.output(), "process source running")
	})

	exe := payload(t, shmDir(t))
	cmd := exec.Command(exe, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done: // stopped locally, with no collector
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("payload not stopped while the collector was down")
	}

	startCollector(t, c.data, addr)
	eventually(t, 60*time.Second, "the queued alert to reach the restarted collector", func() bool {
		r := c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001")
		if r.code != 0 {
			return false
		}
		// The kernel layer's ring keeps exec records made while no sensor
		// read it (an earlier test's payloads): count this payload's.
		n := 0
		for _, line := range jsonLines(t, r.stdout) {
			if v, _ := event.Lookup(line, "process.executable"); v == exe {
				n++
			}
		}
		return n == 1
	})
}

// TestOneClearLine covers the operator's failure modes: each ends with one
// line on stderr naming the problem, and the documented exit code.
func TestOneClearLine(t *testing.T) {
	work := t.TempDir()
	c := startCollector(t, filepath.Join(work, "collector"), freeAddr(t))
	analystTok := c.tokenFile(t, "analyst", work)
	wrongTok := filepath.Join(work, "wrong.token")
	if err := os.WriteFile(wrongTok, []byte("tw_not-a-real-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(work, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("mode: enforc\ncolector:\n  url: https://x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badValues := filepath.Join(work, "values.yaml")
	if err := os.WriteFile(badValues, []byte("mode: enforc\nprocess:\n  backend: ebpf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mode := "monitor" // the token check must fail before any privilege matters
	tests := []struct {
		name     string
		bin      string
		args     []string
		code     int
		contains []string
	}{
		{"sensor: unknown key", "tillwatch-sensor", []string{"run", "-c", badCfg}, 2, []string{"colector (line 2): unknown key"}},
		{"sensor: every bad value at once", "tillwatch-sensor", []string{"run", "-c", badValues, "--no-collector"}, 2, []string{"mode:", "process.backend:"}},
		{"sensor: wrong enrolment token", "tillwatch-sensor", []string{"run", "--collector", c.url, "--ca", c.ca, "--enroll-token", wrongTok,
			"--state-dir", filepath.Join(work, "s1"), "--mode", mode, "--metrics-listen", ""}, 2, []string{"refused the token (401)", "token create --role sensor"}},
		{"sensor: unknown flag", "tillwatch-sensor", []string{"run", "--colector", "x"}, 2, []string{"unknown flag"}},
		{"collector: bad config", "tillwatch-collector", []string{"run", "-c", badCfg}, 2, []string{"mode"}},
		{"cli: wrong token", "tillwatch", []string{"alerts", "--collector", c.url, "--ca", c.ca, "--token", wrongTok}, 1, []string{"refused the token (401)"}},
		{"cli: unreachable collector", "tillwatch", []string{"hosts", "--collector", "https://" + freeAddr(t), "--ca", c.ca, "--token", analystTok}, 1, []string{"unreachable", "connection refused"}},
		{"cli: no collector given", "tillwatch", []string{"alerts", "--token", analystTok}, 2, []string{"--collector"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TILLWATCH_COLLECTOR", "")
			r := run(t, tc.bin, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tc.code, r.stderr)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
				// The sensor's start-up log line precedes the error.
				if !strings.Contains(l, "msg=") && !strings.HasPrefix(l, "{") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Errorf("want exactly one error line, got %d: %q", len(lines), r.stderr)
			}
			for _, w := range tc.contains {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stack trace on stderr: %q", r.stderr)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	for _, b := range []string{"tillwatch", "tillwatch-sensor", "tillwatch-collector"} {
		if r := run(t, b, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, b+" ") {
			t.Errorf("%s version: %d %q", b, r.code, r.stdout)
		}
		if r := run(t, b, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage") {
			t.Errorf("%s --help: %d %q", b, r.code, r.stdout)
		}
	}
}

func TestSensorCheck(t *testing.T) {
	requireRoot(t)
	if bare := run(t, "tillwatch-sensor", "check"); bare.code != 0 || !strings.Contains(bare.stdout, "no config given") {
		t.Errorf("check without a config: exit %d, %q %q", bare.code, bare.stdout, bare.stderr)
	}
	r := run(t, "tillwatch-sensor", "check", "--no-collector", "--state-dir", t.TempDir())
	if r.code != 0 {
		t.Fatalf("check exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"process connector (netlink)", "fanotify", "yara", "effective config", "result: the sensor can run"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.stdout)
		}
	}
	bad := run(t, "tillwatch-sensor", "check", "--collector", "http://nope")
	if bad.code != 2 || !strings.Contains(bad.stdout, "cannot run") {
		t.Errorf("check with a bad config: exit %d, %q", bad.code, bad.stdout)
	}
}

// TestSimulateFleet drives the real collector with the CLI's fleet simulator.
func TestSimulateFleet(t *testing.T) {
	work := t.TempDir()
	c := startCollector(t, filepath.Join(work, "collector"), freeAddr(t))
	tok := c.tokenFile(t, "sensor", work)
	analyst := c.tokenFile(t, "analyst", work)
	r := run(t, "tillwatch", "simulate", "fleet", "--collector", c.url, "--ca", c.ca, "--enroll-token", tok,
		"--sensors", "20", "--alert-interval", "300ms", "--alerts-per-sensor", "3", "--duration", "6s", "--heartbeat", "2s")
	if r.code != 0 || !strings.Contains(r.stdout, "20 sensors enrolled") {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	hosts := jsonLines(t, c.cli(t, analyst, "hosts", "--json").stdout)
	var alerts float64
	for _, h := range hosts {
		alerts += h["alert_count"].(float64)
	}
	if len(hosts) != 20 || alerts != 60 {
		t.Errorf("collector has %d hosts and %v alerts, want 20 and 60", len(hosts), alerts)
	}
}

// TestDemo runs the README's first command's program: it must show the
// attack detected and, as root, stopped, and leave nothing running.
func TestDemo(t *testing.T) {
	requireRoot(t)
	r := run(t, "tillwatch", "demo", "--bin", binDir)
	if r.code != 0 {
		t.Fatalf("demo exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"[4/4]", "TW-EXEC-0001", "the payload was stopped by the sensor",
		"the encryptor was stopped", "TW-RANSOM-000", "restored every file", "what to try next"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", "tillwatch-demo-payload").Output(); len(out) > 0 {
		t.Errorf("demo left its payload running: %s", out)
	}
}
