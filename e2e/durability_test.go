package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpooledAlertsSurviveSIGKILL: alerts raised while the collector is
// down are in the spool; the sensor is killed with SIGKILL (no shutdown
// path runs), restarted, and the collector comes back: every alert is
// stored exactly once, each with its own sequence number.
func TestSpooledAlertsSurviveSIGKILL(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	addr := freeAddr(t)
	c := startCollector(t, filepath.Join(work, "collector"), addr)
	sensorTok := c.tokenFile(t, "sensor", work)
	analystTok := c.tokenFile(t, "analyst", work)
	hostID := "e2e-kill9-" + itoa(os.Getpid())
	alertsOut := filepath.Join(work, "alerts.ndjson")
	args := []string{"run", "--collector", c.url, "--ca", c.ca, "--enroll-token", sensorTok,
		"--state-dir", filepath.Join(work, "sensor"), "--spool", filepath.Join(work, "spool"),
		"--host-id", hostID, "--mode", "enforce", "--metrics-listen", "", "--alerts-out", alertsOut}

	// Enrol while the collector is up, then take it away.
	sensor := start(t, "tillwatch-sensor", args...)
	eventually(t, 30*time.Second, "enrolment", func() bool {
		r := c.cli(t, analystTok, "hosts", "--json")
		return r.code == 0 && strings.Contains(r.stdout, hostID)
	})
	if err := c.p.stop(); err != nil {
		t.Fatalf("collector stop: %v", err)
	}

	const attacks = 5
	dir := shmDir(t)
	exe := payload(t, dir)
	for i := range attacks {
		cmd := exec.Command(exe, "60", itoa(i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("payload %d not stopped", i)
		}
	}
	// The sensor acts first and journals right after, so a dead payload
	// does not yet mean a durable alert. --alerts-out is written only after
	// the spool has the alert (the journal precedes every other sink), so
	// once all five are there, all five are on disk. No graceful path runs:
	eventually(t, 15*time.Second, "all five alerts journaled", func() bool {
		raw, _ := os.ReadFile(alertsOut)
		return strings.Count(string(raw), "TW-EXEC-0001") >= attacks
	})
	if err := sensor.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-sensor.done

	start(t, "tillwatch-sensor", args...)
	startCollector(t, c.data, addr)
	// Only this test's payloads count: with the kernel process source, a
	// starting sensor also reports the execs the pinned ring kept while no
	// sensor read it (an earlier test's payloads, with the exe elsewhere).
	ours := func(all []map[string]any) []map[string]any {
		var out []map[string]any
		for _, a := range all {
			if exe, _ := get(a, "process.executable").(string); strings.HasPrefix(exe, dir+"/") {
				out = append(out, a)
			}
		}
		return out
	}
	var alerts []map[string]any
	eventually(t, 60*time.Second, "all spooled alerts at the collector", func() bool {
		r := c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001")
		if r.code != 0 {
			return false
		}
		alerts = ours(jsonLines(t, r.stdout))
		return len(alerts) >= attacks
	})
	time.Sleep(2 * time.Second) // give a duplicate every chance to show up
	alerts = ours(jsonLines(t, c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001").stdout))
	if len(alerts) != attacks {
		t.Fatalf("collector holds %d alerts, want exactly %d", len(alerts), attacks)
	}
	seqs := map[float64]bool{}
	for _, a := range alerts {
		seq, _ := get(a, "event.sequence").(float64)
		if seq <= 0 || seqs[seq] {
			t.Errorf("alert without a unique event.sequence: %v", get(a, "event.sequence"))
		}
		seqs[seq] = true
	}
}

// TestCollectorSIGKILLLosesNothing kills the collector with SIGKILL while
// alerts flow and restarts it: every alert is stored exactly once.
func TestCollectorSIGKILLLosesNothing(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	addr := freeAddr(t)
	c := startCollector(t, filepath.Join(work, "collector"), addr)
	sensorTok := c.tokenFile(t, "sensor", work)
	analystTok := c.tokenFile(t, "analyst", work)
	hostID := "e2e-collkill-" + itoa(os.Getpid())
	start(t, "tillwatch-sensor", "run", "--collector", c.url, "--ca", c.ca, "--enroll-token", sensorTok,
		"--state-dir", filepath.Join(work, "sensor"), "--spool", filepath.Join(work, "spool"),
		"--host-id", hostID, "--mode", "enforce", "--metrics-listen", "")
	eventually(t, 30*time.Second, "enrolment", func() bool {
		r := c.cli(t, analystTok, "hosts", "--json")
		return r.code == 0 && strings.Contains(r.stdout, hostID)
	})

	exe := payload(t, shmDir(t))
	attack := func(i int) {
		cmd := exec.Command(exe, "60", itoa(i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("payload %d not stopped", i)
		}
	}
	const total = 6
	for i := range total / 2 {
		attack(i)
	}
	if err := c.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.p.done
	for i := total / 2; i < total; i++ {
		attack(i)
	}
	startCollector(t, c.data, addr)
	eventually(t, 60*time.Second, "every alert after the collector's restart", func() bool {
		r := c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001")
		return r.code == 0 && len(jsonLines(t, r.stdout)) >= total
	})
	time.Sleep(2 * time.Second)
	if n := len(jsonLines(t, c.cli(t, analystTok, "alerts", "--json", "--host", hostID, "--rule", "TW-EXEC-0001").stdout)); n != total {
		t.Fatalf("collector holds %d alerts, want exactly %d", n, total)
	}
}
