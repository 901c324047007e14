package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/client"
)

const probeRule = `title: tillwatch bundle probe
id: 6a0c7f3e-1b2d-4c5e-9f80-b0bd1e000001
status: test
description: Fires on the e2e test's probe binary; proves a bundle's rules are loaded.
author: tillwatch
tags: [attack.execution, attack.t1059]
logsource: {category: process_creation, product: linux}
detection:
  selection:
    Image|endswith: '/tw-bundle-probe'
  condition: selection
level: high
`

func probeSample(exe string) string {
	return fmt.Sprintf(`{"@timestamp": "2025-01-01T10:00:00Z", "ecs": {"version": "8.17.0"},
 "event": {"kind": "event", "id": "sample", "category": ["process"], "type": ["start"], "action": "exec", "dataset": "tillwatch.process"},
 "agent": {"id": "", "type": "tillwatch-sensor", "version": ""}, "host": {"id": "", "name": "till-01"},
 "process": {"pid": 4242, "name": "%s", "executable": "%s", "command_line": "%s 1"}}`, filepath.Base(exe), exe, exe)
}

// TestRuleBundleReachesTheSensor: a rule author bundles and signs a rule;
// the collector serves the file; a sensor pinning the author's key fetches
// it at its first heartbeat, restarts into it, reports the new rule set in
// its heartbeats, and the bundled rule fires. An older bundle dropped in
// its place later is refused on the sensor, and reported.
func TestRuleBundleReachesTheSensor(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if r := run(t, "tillwatch", "keys", "gen", "--out", dir, "--name", "rules"); r.code != 0 {
		t.Fatalf("keys gen: %s", r.stderr)
	}
	tree := filepath.Join(dir, "tree")
	writeFile(t, filepath.Join(tree, "sigma", "bundle_probe.yml"), probeRule)
	writeFile(t, filepath.Join(tree, "sigma", "tests", "bundle_probe", "positive", "probe.json"), probeSample("/opt/x/tw-bundle-probe"))
	writeFile(t, filepath.Join(tree, "sigma", "tests", "bundle_probe", "negative", "other.json"), probeSample("/usr/bin/true"))
	bundle := filepath.Join(dir, "bundle.json")
	for _, serial := range []string{"1", "2"} {
		out := filepath.Join(dir, "bundle-"+serial+".json")
		if r := run(t, "tillwatch", "rules", "bundle", "--serial", serial, "--sign-with", filepath.Join(dir, "rules.key"), "--out", out, tree); r.code != 0 {
			t.Fatalf("rules bundle: %s %s", r.stdout, r.stderr)
		}
	}
	copyFile(t, filepath.Join(dir, "bundle-2.json"), bundle)

	collCfg := filepath.Join(dir, "collector.yaml")
	writeFile(t, collCfg, fmt.Sprintf("heartbeat_interval: 5s\nsilence_after: 1m\nrules_bundle: {file: %s, keys: [%s]}\n", bundle, filepath.Join(dir, "rules.pub")))
	addr := freeAddr(t)
	coll := startCollector(t, filepath.Join(dir, "collector"), addr, "-c", collCfg)
	enroll := coll.tokenFile(t, "sensor", dir)
	analyst := readToken(t, coll.tokenFile(t, "analyst", dir))

	sensorCfg := filepath.Join(dir, "sensor.yaml")
	writeFile(t, sensorCfg, fmt.Sprintf("yara: {enabled: false}\nmetrics: {listen: \"\"}\nrule_bundles: {keys: [%s]}\n", filepath.Join(dir, "rules.pub")))
	alerts := filepath.Join(dir, "alerts.ndjson")
	state := filepath.Join(dir, "sensor")
	sensor := start(t, "tillwatch-sensor", "run", "-c", sensorCfg, "--collector", coll.url, "--ca", coll.ca,
		"--enroll-token", enroll, "--state-dir", state, "--spool", filepath.Join(state, "spool"),
		"--host-id", "e2e-bundle", "--mode", "monitor", "--alerts-out", alerts)

	cl, err := client.New(client.Config{URL: coll.url, CAFile: coll.ca, Token: analyst, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var first string
	eventually(t, 60*time.Second, "the sensor running the bundle (rules_version with a bundle part)", func() bool {
		hosts, err := cl.Hosts(context.Background())
		if err != nil || len(hosts) != 1 {
			return false
		}
		first = hosts[0].RulesVersion
		return strings.Contains(first, "+") && strings.Contains(sensor.output(), "rule bundle installed")
	})
	if _, err := os.Stat(filepath.Join(state, "rules", "2", "sigma", "bundle_probe.yml")); err != nil {
		t.Fatalf("bundle not installed in the state dir: %v", err)
	}

	probe := filepath.Join(dir, "bin", "tw-bundle-probe")
	copyExe(t, "/bin/sleep", probe)
	eventually(t, 30*time.Second, "the bundled rule firing", func() bool {
		_ = exec.Command(probe, "0.3").Run()
		b, _ := os.ReadFile(alerts)
		return strings.Contains(string(b), "6a0c7f3e-1b2d-4c5e-9f80-b0bd1e000001")
	})

	// An older, validly signed bundle is a downgrade: refused and reported.
	copyFile(t, filepath.Join(dir, "bundle-1.json"), bundle)
	eventually(t, 60*time.Second, "the downgrade refused as TW-RULES-0001", func() bool {
		b, _ := os.ReadFile(alerts)
		return strings.Contains(string(b), "TW-RULES-0001")
	})
	if _, err := os.Stat(filepath.Join(state, "rules", "2")); err != nil {
		t.Fatal("the refused downgrade replaced the running bundle")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	// Write beside and rename: the collector must never read half a file.
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
	// A second resolution mtime may equal the last one; the size differs
	// between our two bundles, which is what the collector also compares.
	now := time.Now()
	os.Chtimes(to, now, now)
}
