package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUncleanStopIsReported: the real sensor binary is SIGKILLed (what an
// attacker does before acting) and started again on the same state dir; the
// new run reports TW-SENS-0001 "Sensor restarted after an unclean stop" in
// its --alerts-out, naming the killed run. A clean stop (SIGTERM) that
// follows leaves nothing to report on the next start.
func TestUncleanStopIsReported(t *testing.T) {
	work := t.TempDir()
	state := filepath.Join(work, "state")
	marker := filepath.Join(state, "running.json")
	alertsOut := filepath.Join(work, "alerts.ndjson")
	sensor := func() *proc {
		return start(t, "tillwatch-sensor", "run", "--no-collector", "--mode", "monitor", "--host-id", "e2e-unclean",
			"--state-dir", state, "--spool", filepath.Join(work, "spool"), "--alerts-out", alertsOut, "--metrics-listen", "")
	}
	unclean := func() []map[string]any {
		raw, _ := os.ReadFile(alertsOut)
		var out []map[string]any
		for _, a := range jsonLines(t, string(raw)) {
			if get(a, "rule.id") == "TW-SENS-0001" {
				out = append(out, a)
			}
		}
		return out
	}
	running := func(p *proc) {
		t.Helper()
		// The marker is written once the sensor protects the host; the
		// process source's log line says the pipeline runs.
		eventually(t, sensorStart, "the sensor running", func() bool {
			_, err := os.Stat(marker)
			return err == nil && strings.Contains(p.output(), "process source running")
		})
	}

	first := sensor()
	running(first)
	firstPID := first.cmd.Process.Pid
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL: no chance to clean up
		t.Fatal(err)
	}
	<-first.done
	if got := unclean(); len(got) != 0 {
		t.Fatalf("a first start reported an unclean stop: %v", got)
	}

	second := sensor()
	var a map[string]any
	eventually(t, 30*time.Second, "TW-SENS-0001 in --alerts-out", func() bool {
		if got := unclean(); len(got) > 0 {
			a = got[0]
			return true
		}
		return false
	})
	for path, want := range map[string]any{
		"event.kind": "alert", "rule.ruleset": "integrity", "rule.name": "Sensor restarted after an unclean stop",
		"event.action": "sensor-unclean-restart", "host.id": "e2e-unclean", "agent.type": "tillwatch-sensor",
		"threat.framework": "MITRE ATT&CK",
	} {
		if got := get(a, path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	msg, _ := get(a, "message").(string)
	if !strings.Contains(msg, "pid "+itoa(firstPID)) {
		t.Errorf("message %q does not name the killed run (pid %d)", msg, firstPID)
	}
	// Same boot: the sensor died while the host ran on, the serious case.
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err == nil {
		if sev, _ := get(a, "event.severity").(float64); sev != 73 || !strings.Contains(msg, "killed") {
			t.Errorf("severity %v message %q: want 73 and the process killed or crashed", get(a, "event.severity"), msg)
		}
	}

	running(second)
	if err := second.stop(); err != nil { // SIGTERM: a clean stop, exit 0
		t.Fatalf("clean stop: %v\n%s", err, second.output())
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("marker left after a clean stop: %v", err)
	}

	third := sensor()
	running(third)
	if err := third.stop(); err != nil {
		t.Fatalf("clean stop: %v\n%s", err, third.output())
	}
	// The pipeline drains what its sources emitted before it exits, so a
	// report would be in the file by now.
	if got := unclean(); len(got) != 1 {
		t.Fatalf("%d unclean-stop alerts after a clean stop and restart, want still 1: %v", len(got), got)
	}
}
