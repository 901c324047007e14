package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestYARAScansMemoryOfFlaggedProcess: a program run from a world-writable
// directory is flagged (TW-EXEC-0002, report only); the sensor then asks
// YARA to scan that process's memory, where a marker sits in its
// environment, and raises a YARA alert about the same pid. The marker rule
// comes from an extra --rules folder, as an operator's would.
func TestYARAScansMemoryOfFlaggedProcess(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	const marker = "TILLWATCH-E2E-MEMORY-MARKER-7f3a9c"
	extra := filepath.Join(work, "extra-rules")
	if err := os.MkdirAll(filepath.Join(extra, "yara"), 0o755); err != nil {
		t.Fatal(err)
	}
	rule := "rule tw_e2e_memory_marker {\n  meta:\n    id = \"TW-E2E-YARA-0001\"\n  strings:\n    $m = \"" + marker + "\"\n  condition:\n    $m\n}\n"
	if err := os.WriteFile(filepath.Join(extra, "yara", "marker.yar"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	alertsOut := filepath.Join(work, "alerts.ndjson")
	sensor := start(t, "tillwatch-sensor", "run", "--no-collector", "--mode", "monitor",
		"--state-dir", filepath.Join(work, "state"), "--rules", extra, "--alerts-out", alertsOut, "--metrics-listen", "")
	eventually(t, sensorStart, "the process source", func() bool { return strings.Contains(sensor.output(), "process source running") })

	drop := filepath.Join(work, "drop")
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(drop, 0o777); err != nil { // world-writable, like /tmp
		t.Fatal(err)
	}
	exe := payload(t, drop)
	cmd := exec.Command(exe, "30")
	cmd.Env = append(os.Environ(), "TW_MARKER="+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var yaraAlert map[string]any
	eventually(t, 30*time.Second, "a YARA alert about the flagged process's memory", func() bool {
		raw, _ := os.ReadFile(alertsOut)
		for _, a := range jsonLines(t, string(raw)) {
			if get(a, "rule.ruleset") == "yara" && pidOf(get(a, "process.pid")) == cmd.Process.Pid {
				yaraAlert = a
				return true
			}
		}
		return false
	})
	if name, _ := get(yaraAlert, "rule.name").(string); !strings.Contains(name, "tw_e2e_memory_marker") {
		t.Errorf("YARA alert names rule %v", get(yaraAlert, "rule.name"))
	}
}
