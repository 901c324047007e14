package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRMMConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "sensor.yaml")
	if err := os.WriteFile(f, []byte("collector: {disabled: true}\nrmm:\n  approved: [tactical-rmm]\n  kill_agent: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RMM.Approved) != 1 || c.RMM.Approved[0] != "tactical-rmm" || !c.RMM.KillAgent || c.RMM.ScanInterval != time.Minute {
		t.Errorf("rmm = %+v", c.RMM)
	}
	c.RMM.Approved = []string{"tactical rmm"}
	c.RMM.ScanInterval = time.Second
	err = c.Validate()
	for _, want := range []string{"rmm.approved", "rmm.scan_interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate must name %s, got %v", want, err)
		}
	}
	if err := os.WriteFile(f, []byte("rmm:\n  aproved: [x]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "rmm.aproved") {
		t.Errorf("a typo must name its key, got %v", err)
	}
}
