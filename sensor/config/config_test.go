package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultIsValidStandalone(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Collector.Disabled = true
	if err := c.Validate(); err != nil {
		t.Fatalf("default standalone config invalid: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Mode = "block"
	c.Watch = []string{"/does/not/exist", file}
	c.Collector.URL = "http://collector"
	c.Process.Backend = "ebpf"
	c.Log.Level = "loud"
	c.Metrics.Listen = "nope"
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{"mode:", "watch: /does/not/exist", "is not a directory", "collector.url:", "collector.ca_file:", "process.backend:", "log.level:", "metrics.listen:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error lacks %q:\n%v", key, err)
		}
	}
}

func TestLoadStrict(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("mode: monitor\ncollector:\n  disabled: true\n  heartbeat_interval: 10s\nlabels: {store: \"0042\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "monitor" || c.Collector.HeartbeatInterval.Seconds() != 10 || c.Labels["store"] != "0042" || c.Process.Backend != "auto" {
		t.Errorf("loaded %+v", c)
	}
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("collector:\n  hearbeat_interval: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(typo); err == nil || !strings.Contains(err.Error(), "collector.hearbeat_interval") {
		t.Errorf("typo: %v", err)
	}
}
