package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/client"
)

const (
	e2eProduct = "tw-e2e-agent"
	e2eSigmaID = "5c1f0e9a-7b2d-4e3f-9a8c-e2e0campaign"
)

// TestCampaignDisablesRMMOnEverySensor is the Coop case with real
// binaries: a collector whose campaign policy is disable-rmm, 20 sensor
// processes, an RMM agent running. Three sensors (and only they) carry a
// rule that fires on the payload; when it fires on the three, the collector
// sees a campaign and every one of the 20 sensors disables the agent,
// which then stays dead when restarted.
func TestCampaignDisablesRMMOnEverySensor(t *testing.T) {
	requireRoot(t)
	const sensors, hit = 20, 3
	dir := t.TempDir()

	// The RMM agent: a copy of sleep under the product's install path.
	agentDir := filepath.Join(dir, "opt", e2eProduct)
	agentExe := filepath.Join(agentDir, e2eProduct)
	copyExe(t, "/bin/sleep", agentExe)
	rulesAll := filepath.Join(dir, "rules-all")
	writeFile(t, filepath.Join(rulesAll, "rmm", "catalog.yaml"), fmt.Sprintf(`products:
  - id: %s
    name: tillwatch e2e agent
    vendor: tillwatch tests
    kind: rmm
    linux: {processes: [%s], paths: [%s/]}
`, e2eProduct, e2eProduct, agentDir))
	// Only the first three sensors know the payload.
	// sleep, not true: a process that lives a moment is seen with its
	// executable by every sensor's process source.
	payloadExe := filepath.Join(dir, "bin", "tw-e2e-payload")
	copyExe(t, "/bin/sleep", payloadExe)
	rulesHit := filepath.Join(dir, "rules-hit")
	writeFile(t, filepath.Join(rulesHit, "sigma", "e2e_payload.yml"), fmt.Sprintf(`title: tillwatch e2e campaign payload
id: %s
status: test
description: The e2e test's stand-in for a payload pushed through the RMM.
author: tillwatch
tags: [attack.execution, attack.t1072]
logsource: {category: process_creation, product: linux}
detection:
  selection:
    Image|endswith: '/tw-e2e-payload'
  condition: selection
level: critical
`, e2eSigmaID))

	// Only critical alerts count, so background noise on the CI machine
	// cannot complete a campaign of its own.
	collCfg := filepath.Join(dir, "collector.yaml")
	writeFile(t, collCfg, fmt.Sprintf(`campaign:
  hosts: %d
  window: 10m
  min_severity: 95
  action: disable-rmm
  rmm_product: %s
`, hit, e2eProduct))
	addr := freeAddr(t)
	coll := startCollector(t, filepath.Join(dir, "collector"), addr, "-c", collCfg)
	enroll := coll.tokenFile(t, "sensor", dir)
	responder := readToken(t, coll.tokenFile(t, "responder", dir))

	agent := startAgent(t, agentExe)

	sensorCfg := filepath.Join(dir, "sensor.yaml")
	// Twenty sensors on one machine: the kernel layer is one per host (its
	// pinned ring hands each record to one reader), so they use the proc
	// connector, as twenty tills would each use their own kernel.
	writeFile(t, sensorCfg, "yara: {enabled: false}\nfiles: {canaries: false}\nmetrics: {listen: \"\"}\nrmm: {approved: ["+e2eProduct+"]}\nkernel: {mode: \"off\"}\n")
	for i := range sensors {
		state := filepath.Join(dir, fmt.Sprintf("sensor-%02d", i))
		args := []string{"run", "-c", sensorCfg, "--collector", coll.url, "--ca", coll.ca, "--enroll-token", enroll,
			"--state-dir", state, "--spool", filepath.Join(state, "spool"), "--host-id", fmt.Sprintf("e2e-till-%02d", i),
			"--mode", "monitor", "--rules", rulesAll, "--log-level", "warn"}
		if i < hit {
			args = append(args, "--rules", rulesHit)
		}
		start(t, "tillwatch-sensor", args...)
	}
	cl, err := client.New(client.Config{URL: coll.url, CAFile: coll.ca, Token: responder, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eventually(t, 90*time.Second, "20 sensors enrolled", func() bool {
		hosts, err := cl.Hosts(ctx)
		return err == nil && len(hosts) == sensors
	})
	// Each sensor's long-poll is up once it has enrolled and started; give
	// the slowest a moment so the command meets waiting polls.
	time.Sleep(2 * time.Second)

	triggered := time.Now()
	if out, err := exec.Command(payloadExe, "1").CombinedOutput(); err != nil {
		t.Fatalf("payload: %v %s", err, out)
	}

	var cmdID string
	eventually(t, 60*time.Second, "a campaign command", func() bool {
		cmds, err := cl.Commands(ctx, 10)
		if err != nil {
			return false
		}
		for _, c := range cmds {
			if c.Issuer == "collector:campaign" && c.Action == "disable-rmm" && strings.Contains(c.Reason, e2eSigmaID) {
				cmdID = c.ID
				return true
			}
		}
		return false
	})
	var last string
	eventually(t, 60*time.Second, "every sensor acknowledging", func() bool {
		st, err := cl.Command(ctx, cmdID)
		if err != nil || len(st.Hosts) != sensors {
			return false
		}
		acked := 0
		for _, h := range st.Hosts {
			if h.Result != nil {
				if h.Result.Status != "ok" && h.Result.Status != "noop" {
					t.Fatalf("host %s answered %+v", h.HostID, *h.Result)
				}
				acked++
			}
		}
		last = fmt.Sprintf("%d/%d acknowledged", acked, sensors)
		return acked == sensors
	})
	t.Logf("campaign trigger to the last acknowledgement: %s (%s)", time.Since(triggered).Round(time.Millisecond), last)

	select {
	case <-agent.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the RMM agent is still running after disable-rmm")
	}
	// Disabled means disabled: started again, it is killed on sight.
	again := startAgent(t, agentExe)
	select {
	case <-again.done:
	case <-time.After(15 * time.Second):
		t.Fatal("a restarted disabled agent was not killed")
	}
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startAgent(t *testing.T, exe string) *agentProc {
	t.Helper()
	a := &agentProc{cmd: exec.Command(exe, "3600"), done: make(chan struct{})}
	a.cmd.Stdout, a.cmd.Stderr = io.Discard, io.Discard
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.cmd.Process.Signal(syscall.SIGKILL)
			<-a.done
		}
	})
	return a
}

func copyExe(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readToken(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
