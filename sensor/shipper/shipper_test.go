package shipper_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/shipper"
	"github.com/tillwatch/tillwatch/sensor/uplink"
)

type healthLog struct {
	mu     sync.Mutex
	states []string
}

func (h *healthLog) report(_, state, _ string) {
	h.mu.Lock()
	h.states = append(h.states, state)
	h.mu.Unlock()
}
func (h *healthLog) saw(state string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.states {
		if s == state {
			return true
		}
	}
	return false
}

func alert(host string, i int) *event.Event {
	return &event.Event{
		Timestamp: time.Now().UTC(), ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"}, Action: "x", Severity: 10 + i%50, RiskScore: 10},
		Rule:  &event.Rule{ID: "R-1", Name: "r", Ruleset: event.RulesetSigma}, Threat: &event.Threat{Framework: "MITRE ATT&CK"},
		Host: event.Host{ID: host, Name: host}, Agent: event.Agent{ID: "a", Type: event.AgentType, Version: "test"},
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSurvivesCollectorOutageExactlyOnce sends through a real collector,
// stops it, keeps producing, restarts it on the same address and data, and
// checks every alert is stored exactly once.
func TestSurvivesCollectorOutageExactlyOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := collectortest.Start(t, dir, "")
	tokFile := filepath.Join(t.TempDir(), "t")
	if err := os.WriteFile(tokFile, []byte(c.Token(api.RoleSensor)), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{URL: c.URL, CAFile: c.CAFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	up, err := uplink.New(uplink.Options{Client: cl, URL: c.URL, StateDir: t.TempDir(), TokenFile: tokFile,
		Request: api.EnrollRequest{HostID: "till-s", HostName: "till-s", AgentVersion: "t"}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	q := shipper.NewMemQueue(10000)
	var h healthLog
	s := shipper.New(shipper.Options{Queue: q, Sender: up, Permanent: uplink.Permanent, BatchEvents: 50,
		FlushInterval: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Health: h.report})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()

	write := func(from, to int) {
		for i := from; i < to; i++ {
			if err := s.Write(ctx, alert("till-s", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 120)
	waitFor(t, "the first 120 alerts", func() bool { return q.Len() == 0 && len(c.Alerts("till-s")) == 120 })

	addr := c.Addr
	c.Stop()
	write(120, 300)
	waitFor(t, "a degraded health report", func() bool { return h.saw(event.HealthDegraded) })
	if q.Len() == 0 {
		t.Fatal("queue emptied while the collector was down")
	}

	c2 := collectortest.Start(t, dir, addr)
	waitFor(t, "the backlog to drain", func() bool { return q.Len() == 0 })
	if n := len(c2.Alerts("till-s")); n != 300 {
		t.Errorf("collector holds %d alerts, want exactly 300", n)
	}
	if !h.saw(event.HealthOK) {
		t.Error("no health report when the collector came back")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}
