package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
)

func TestPrintHosts(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		hosts []api.Host
		want  string
	}{
		{"none", nil, "no hosts enrolled\n"},
		{"versions, an older sensor without them, sorted health", []api.Host{
			{HostID: "till-1", HostName: "lane1", AgentVersion: "1.4.0", Mode: "enforce",
				RulesVersion: "builtin-0123456789ab+fedcba987654", ConfigVersion: "a1b2c3d4e5f6",
				LastSeen: now.Add(-12 * time.Second), AlertCount: 3,
				Health: map[string]string{"process": "ok", "yara": "failed", "fileactivity": "degraded"}},
			{HostID: "till-2", HostName: "lane2", AgentVersion: "1.3.0", Mode: "monitor",
				LastSeen: now.Add(-2 * time.Minute)},
		}, "" +
			"HOST ID  NAME   VERSION  MODE     RULES                              CONFIG        LAST SEEN  ALERTS  HEALTH\n" +
			"till-1   lane1  1.4.0    enforce  builtin-0123456789ab+fedcba987654  a1b2c3d4e5f6  12s ago    3       fileactivity=degraded,yara=failed\n" +
			"till-2   lane2  1.3.0    monitor  -                                  -             2m0s ago   0       ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			printHosts(&b, tt.hosts, now)
			if b.String() != tt.want {
				t.Errorf("printHosts:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}
