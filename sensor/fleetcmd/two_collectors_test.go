package fleetcmd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/sensor/fleetcmd"
	"github.com/tillwatch/tillwatch/sensor/uplink"
)

// TestCommandThroughAnotherCollector: two collectors share one
// Elasticsearch; a responder issues through the first, the sensor is
// attached to the second, long-polling. The command reaches it (the second
// collector notices the store's command generation move), and the
// acknowledgement it sends to the second is visible through the first.
func TestCommandThroughAnotherCollector(t *testing.T) {
	esURL := os.Getenv("TILLWATCH_ES_URL")
	if esURL == "" {
		t.Skip("TILLWATCH_ES_URL not set: run `make es-up` and export TILLWATCH_ES_URL=http://127.0.0.1:9200 (make test does both)")
	}
	b := make([]byte, 6)
	rand.Read(b)
	ns := "t" + hex.EncodeToString(b)
	dir := t.TempDir()
	first := collectortest.StartElasticsearchIn(t, elasticsearch.Options{URL: esURL, Namespace: ns}, dir)
	second := collectortest.StartElasticsearchIn(t, elasticsearch.Options{URL: esURL, Namespace: ns}, dir)

	stateDir := t.TempDir()
	tokFile := filepath.Join(t.TempDir(), "enroll.token")
	if err := os.WriteFile(tokFile, []byte(second.Token(api.RoleSensor)), 0o600); err != nil {
		t.Fatal(err)
	}
	up, err := uplink.New(uplink.Options{
		Client: second.Client(""), URL: second.URL, StateDir: stateDir, TokenFile: tokFile,
		Request: api.EnrollRequest{HostID: "till-two", HostName: "till-two", AgentVersion: "test"},
		Log:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := up.Enroll(ctx, false); err != nil {
		t.Fatal(err)
	}
	acts := &recorder{}
	r, err := fleetcmd.New(fleetcmd.Options{Link: up, Actions: acts, HostID: "till-two", StateDir: stateDir, Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run(ctx)
	time.Sleep(time.Second) // the long-poll is waiting on the second collector

	resp := first.Client(first.Token(api.RoleResponder))
	issued := time.Now()
	st, err := resp.IssueCommand(ctx, api.IssueRequest{Action: killswitch.ActionScan,
		Targets: killswitch.Targets{Hosts: []string{"till-two"}}, Params: map[string]string{"paths": "/tmp"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := resp.Command(ctx, st.Command.ID)
		if err == nil && len(got.Hosts) == 1 && got.Hosts[0].State == store.HostAcked {
			if got.Hosts[0].Result.Status != killswitch.StatusOK || acts.count() != 1 {
				t.Fatalf("acked %+v after %d actions", got.Hosts[0].Result, acts.count())
			}
			t.Logf("issued on one collector, acknowledged through the other after %s", time.Since(issued).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("command issued on the first collector never acknowledged through the second: %+v %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
