package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/watchdog"
)

func sequenced(host string, seqs ...int) []byte {
	var b strings.Builder
	for _, q := range seqs {
		fmt.Fprintf(&b, `{"@timestamp":%q,"event":{"kind":"event","id":"ev-%s-%d","sequence":%d},"host":{"id":%q,"name":%q}}`+"\n",
			time.Now().UTC().Format(time.RFC3339Nano), host, q, q, host, host)
	}
	return []byte(b.String())
}

func TestSequenceGapRaisesAnAlert(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	ctx := context.Background()
	enr, err := c.Client(c.Token(api.RoleSensor)).Enroll(ctx, api.EnrollRequest{HostID: "till-g", HostName: "till-g", AgentVersion: "1", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	agent := c.Client(enr.Credential)
	for _, batch := range [][]int{{1, 2, 3}, {1, 2, 3}, {7, 8}, {9}} { // a redelivery, then a hole 4..6
		if _, err := agent.SendEvents(ctx, sequenced("till-g", batch...)); err != nil {
			t.Fatal(err)
		}
	}
	alerts := c.Alerts("till-g")
	if len(alerts) != 1 {
		t.Fatalf("want exactly one events-lost alert, got %d", len(alerts))
	}
	raw, _ := json.Marshal(alerts[0])
	if !strings.Contains(string(raw), watchdog.RuleEventsLost) || !strings.Contains(string(raw), "sequence 4 to 6") {
		t.Errorf("alert %s", raw)
	}
	hosts, err := c.Client(c.Token(api.RoleAnalyst)).Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hosts[0].EventsLost != 3 || hosts[0].LastSequence != 9 {
		t.Errorf("host events_lost %d last_sequence %d, want 3 and 9", hosts[0].EventsLost, hosts[0].LastSequence)
	}
}
