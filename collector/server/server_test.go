package server_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/server"
)

func TestEnroll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	sensor := e.token(api.RoleSensor)
	agent := e.enroll("till-0")
	good := api.EnrollRequest{HostID: "till-1", HostName: "Till 1", OS: "linux", AgentVersion: "1.0.0", Labels: map[string]string{"store": "0042"}, HostKey: "hk-test-0123456789abcdef0123456789abcdef"}
	tests := []struct {
		name    string
		token   string
		req     api.EnrollRequest
		want    int    // 0 = success
		wantMsg string // substring of the client's error
	}{
		{"good", sensor, good, 0, ""},
		{"unknown token", "tw_not-a-token", good, 401, "collector refused the token (401): unknown token"},
		{"no token", "", good, 401, "missing bearer token"},
		{"analyst token", e.token(api.RoleAnalyst), good, 403, "analyst token may not call"},
		{"agent credential of another host", agent, good, 403, "may only enrol host till-0"},
		{"no host_key", sensor, api.EnrollRequest{HostID: "till-5", HostName: "x"}, 400, "host_key is required"},
		{"short host_key", sensor, api.EnrollRequest{HostID: "till-5", HostName: "x", HostKey: "short"}, 400, "host_key must be 32 to 256 bytes"},
		{"empty host_id", sensor, api.EnrollRequest{HostName: "x"}, 400, "host_id is required"},
		{"long host_id", sensor, api.EnrollRequest{HostID: strings.Repeat("h", 257), HostName: "x"}, 400, "host_id longer than 256"},
		{"control chars", sensor, api.EnrollRequest{HostID: "till\x1b[31m", HostName: "x"}, 400, "host_id contains non-printable"},
		{"no host_name", sensor, api.EnrollRequest{HostID: "till-3"}, 400, "host_name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.client(tt.token).Enroll(ctx, tt.req)
			if tt.want == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if resp.HostID != tt.req.HostID || resp.AgentID == "" || resp.Credential == "" {
					t.Fatalf("response %+v", resp)
				}
				// The credential works for agent routes.
				if _, err := e.client(resp.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "1.0.0"}); err != nil {
					t.Fatalf("new credential refused: %v", err)
				}
				return
			}
			if got := httpStatus(err); got != tt.want {
				t.Fatalf("status %d (%v), want %d", got, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestReEnrollRevokesOldCredential(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	first := e.enroll("till-1")
	second := e.enroll("till-1")
	_, err := e.client(first).Heartbeat(ctx, api.Heartbeat{})
	if httpStatus(err) != 401 {
		t.Fatalf("old credential: %v, want 401", err)
	}
	if _, err := e.client(second).Heartbeat(ctx, api.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
}

func TestIngestDedup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(e.enroll("till-1"))
	now := time.Now()
	batch := ndjson(
		alertLine("a1", "till-1", "rmm.anydesk", now),
		alertLine("a2", "till-1", "rmm.anydesk", now),
		`{"@timestamp":"2025-05-01T10:00:00Z","event":{"id":"t1","kind":"event","dataset":"tillwatch.process"},"host":{"id":"till-1"}}`,
	)
	first, err := c.SendEvents(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if first.Accepted != 3 || first.Duplicates != 0 || len(first.Rejected) != 0 {
		t.Fatalf("first send %+v", first)
	}
	second, err := c.SendEvents(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if second.Accepted != 0 || second.Duplicates != 3 {
		t.Fatalf("second send %+v, want 3 duplicates", second)
	}
	alerts, err := e.client(e.token(api.RoleAnalyst)).Alerts(ctx, client.AlertQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 2 {
		t.Fatalf("%d alerts stored, want each exactly once (2)", len(alerts))
	}
	ev := alerts[0]["event"].(map[string]any)
	if _, ok := ev["ingested"].(string); !ok {
		t.Errorf("event.ingested missing from stored alert: %v", ev)
	}
	if msg := alerts[0]["message"].(string); !strings.HasPrefix(msg, "test alert <") {
		t.Errorf("document altered: message %q", msg)
	}
}

func TestIngestRejectsSpoofedHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll("till-2")
	c := e.client(e.enroll("till-1"))
	resp, err := c.SendEvents(ctx, ndjson(
		alertLine("own", "till-1", "r", time.Now()),
		alertLine("spoof", "till-2", "r", time.Now()),
	))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 1 || len(resp.Rejected) != 1 || resp.Rejected[0].Line != 2 || resp.Rejected[0].EventID != "spoof" ||
		!strings.Contains(resp.Rejected[0].Error, "does not match the credential") {
		t.Fatalf("response %+v", resp)
	}
	alerts, err := e.client(e.token(api.RoleAnalyst)).Alerts(ctx, client.AlertQuery{HostID: "till-2"})
	if err != nil || len(alerts) != 0 {
		t.Fatalf("spoofed alert stored for till-2: %v %v", alerts, err)
	}
}

func TestIngestMalformedLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(e.enroll("till-1"))
	now := time.Now()
	resp, err := c.SendEvents(ctx, ndjson(
		alertLine("g1", "till-1", "r", now), // 1
		`{"event":{"id":"x"`,                // 2 truncated
		alertLine("g2", "till-1", "r", now), // 3
		`{"@timestamp":"2025-05-01T10:00:00Z","event":{"id":"noru","kind":"alert"},"host":{"id":"till-1"}}`, // 4 alert without rule
		`[1,2,3]`,                           // 5
		"",                                  // 6 blank: skipped
		alertLine("g3", "till-1", "r", now), // 7
	))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 3 {
		t.Errorf("accepted %d, want 3", resp.Accepted)
	}
	var lines []int
	for _, r := range resp.Rejected {
		lines = append(lines, r.Line)
	}
	if fmt.Sprint(lines) != "[2 4 5]" {
		t.Fatalf("rejected lines %v, want [2 4 5]: %+v", lines, resp.Rejected)
	}
	if !strings.Contains(resp.Rejected[1].Error, "rule.id is required") {
		t.Errorf("line 4 reason %q", resp.Rejected[1].Error)
	}
}

func TestIngestNotNDJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	agent := e.enroll("till-1")
	r := e.do("POST", api.PathEvents, agent, nil, []byte("hello\nthis is not json\n<xml/>"))
	if r.code != 200 {
		t.Fatalf("status %d %s", r.code, r.body)
	}
	var resp api.IngestResponse
	mustJSON(t, r.body, &resp)
	if resp.Accepted != 0 || len(resp.Rejected) != 3 || resp.Rejected[2].Line != 3 {
		t.Fatalf("%+v", resp)
	}
	for _, body := range [][]byte{{}, []byte("\n\n  \n")} {
		if r := e.do("POST", api.PathEvents, agent, nil, body); r.code != 400 {
			t.Fatalf("empty body %q: %d %s, want 400", body, r.code, r.body)
		}
	}
	if r := e.do("POST", api.PathEvents, agent, map[string]string{"Content-Encoding": "gzip"}, []byte("not gzip")); r.code != 400 {
		t.Fatalf("corrupt gzip: %d %s, want 400", r.code, r.body)
	}
}

// TestGzipBomb is deliberately not parallel so the allocation count is this
// test's alone: 100 MB of zeros, ~100 KB compressed, must be refused with
// 413 after reading no more than the decoded cap.
func TestGzipBomb(t *testing.T) {
	e := newEnv(t)
	agent := e.enroll("till-1")
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	chunk := make([]byte, 1<<20)
	for range 100 {
		zw.Write(chunk)
	}
	zw.Close()
	if buf.Len() > 1<<20 {
		t.Fatalf("bomb is %d bytes compressed; test setup broken", buf.Len())
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := e.do("POST", api.PathEvents, agent, map[string]string{"Content-Encoding": "gzip"}, buf.Bytes())
	runtime.ReadMemStats(&after)
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d %s, want 413", r.code, r.body)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("bomb of %d compressed bytes: %d KiB allocated while refusing it", buf.Len(), alloc>>10)
	if alloc > 16<<20 {
		t.Fatalf("handling the bomb allocated %d MiB; the decoded body must be streamed and capped", alloc>>20)
	}
	// Many small lines beyond the cap are refused the same way, through
	// the client (which gzips).
	line := alertLine("x", "till-1", "r", time.Now())
	big := bytes.Repeat([]byte(line+"\n"), api.MaxBatchBytes/len(line)+10)
	_, err := e.client(agent).SendEvents(context.Background(), big)
	if httpStatus(err) != 413 || !client.IsPermanent(err) {
		t.Fatalf("oversized batch: %v, want permanent 413", err)
	}
}

func TestAlertQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	base := e.clk.Now().Add(-time.Hour).Truncate(time.Second)
	for _, host := range []string{"till-1", "till-2"} {
		c := e.client(e.enroll(host))
		var lines []string
		for i := range 6 {
			rule := "rmm.anydesk"
			if i%2 == 1 {
				rule = "ransomware.burst"
			}
			lines = append(lines, alertLine(fmt.Sprintf("%s-%d", host, i), host, rule, base.Add(time.Duration(i)*10*time.Minute)))
		}
		if _, err := c.SendEvents(ctx, ndjson(lines...)); err != nil {
			t.Fatal(err)
		}
	}
	analyst := e.client(e.token(api.RoleAnalyst))
	tests := []struct {
		name string
		q    client.AlertQuery
		want string // ids in order
	}{
		{"limit newest first", client.AlertQuery{Limit: 3}, "[till-2-5 till-1-5 till-2-4]"},
		{"host", client.AlertQuery{HostID: "till-1", Limit: 2}, "[till-1-5 till-1-4]"},
		{"rule and host", client.AlertQuery{HostID: "till-2", RuleID: "ransomware.burst"}, "[till-2-5 till-2-3 till-2-1]"},
		{"since", client.AlertQuery{Since: base.Add(35 * time.Minute), HostID: "till-1"}, "[till-1-5 till-1-4]"},
		{"none", client.AlertQuery{RuleID: "nope"}, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			alerts, err := analyst.Alerts(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range alerts {
				ids = append(ids, a["event"].(map[string]any)["id"].(string))
			}
			if got := fmt.Sprint(ids); got != tt.want && !(tt.want == "[]" && len(ids) == 0) {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}

	// since as a duration, through the raw API: the last 25 minutes
	// relative to the server clock hold alerts 4 and 5 of each host
	// (40 and 50 minutes after base, base being an hour ago).
	tok := e.token(api.RoleResponder)
	r := e.do("GET", api.PathAlerts+"?since=25m&host=till-1", tok, nil, nil)
	var resp api.AlertsResponse
	mustJSON(t, r.body, &resp)
	if r.code != 200 || len(resp.Alerts) != 2 {
		t.Fatalf("since=25m: %d, %d alerts", r.code, len(resp.Alerts))
	}
	for _, bad := range []string{"since=-5m", "since=last+week", "limit=0", "limit=10001", "limit=ten"} {
		if r := e.do("GET", api.PathAlerts+"?"+bad, tok, nil, nil); r.code != 400 {
			t.Errorf("%s: %d %s, want 400", bad, r.code, r.body)
		}
	}
}

func TestHeartbeatAndHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(e.enroll("till-1"))
	if _, err := c.SendEvents(ctx, ndjson(alertLine("a", "till-1", "r", time.Now()))); err != nil {
		t.Fatal(err)
	}
	analyst := e.client(e.token(api.RoleAnalyst))
	hosts, err := analyst.Hosts(ctx)
	if err != nil || len(hosts) != 1 {
		t.Fatalf("%v %v", hosts, err)
	}
	enrolled := hosts[0].LastSeen

	e.clk.Add(5 * time.Minute)
	resp, err := c.Heartbeat(ctx, api.Heartbeat{HostID: "till-1", AgentVersion: "1.1.0", Mode: "monitor",
		Health: map[string]string{"fanotify": "ok", "yara": "degraded"}, SentAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.IntervalSeconds != int(server.DefaultHeartbeatInterval/time.Second) || !resp.ServerTime.Equal(e.clk.Now()) {
		t.Errorf("heartbeat response %+v", resp)
	}
	hosts, err = analyst.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := hosts[0]
	if got := h.LastSeen.Sub(enrolled); got != 5*time.Minute {
		t.Errorf("last_seen advanced by %v, want 5m", got)
	}
	if h.AgentVersion != "1.1.0" || h.Mode != "monitor" || h.Health["yara"] != "degraded" || h.AlertCount != 1 || h.OS != "linux" {
		t.Errorf("host %+v", h)
	}
	_, err = c.Heartbeat(ctx, api.Heartbeat{HostID: "till-2"})
	if httpStatus(err) != 403 {
		t.Fatalf("heartbeat for another host: %v, want 403", err)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	r := e.do("GET", api.PathHealthz, "", nil, nil)
	if r.code != 200 || strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Fatalf("healthz %d %s", r.code, r.body)
	}
	c := e.client(e.enroll("till-1"))
	if _, err := c.SendEvents(ctx, ndjson(alertLine("a", "till-1", "r", time.Now()), alertLine("a", "till-1", "r", time.Now()), "junk")); err != nil {
		t.Fatal(err)
	}
	e.do("GET", api.PathHosts, "tw_bogus", nil, nil)
	r = e.do("GET", api.PathMetrics, e.token(api.RoleAnalyst), nil, nil)
	if r.code != 200 {
		t.Fatalf("metrics %d", r.code)
	}
	body := string(r.body)
	for _, want := range []string{
		`tillwatch_collector_ingest_events_total{result="accepted"} 1`,
		`tillwatch_collector_ingest_events_total{result="duplicate"} 1`,
		`tillwatch_collector_ingest_events_total{result="rejected"} 1`,
		`tillwatch_collector_enrolments_total 1`,
		`tillwatch_collector_auth_failures_total{reason="unknown"} 1`,
		`tillwatch_collector_hosts 1`,
		`tillwatch_collector_http_requests_total{code="200",route="POST /api/v1/events"} 1`,
		`tillwatch_collector_http_requests_total{code="401",route="GET /api/v1/hosts"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	e.st.Close()
	if r := e.do("GET", api.PathHealthz, "", nil, nil); r.code != 503 {
		t.Fatalf("healthz with closed store: %d", r.code)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// newEnv's cleanup cancels Serve and fails the test if Serve does not
	// return cleanly; here we only check the server answers meanwhile.
	resp, err := e.hc.Get(e.url + api.PathHealthz)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.TLS == nil || resp.TLS.Version < 0x0303 {
		t.Fatalf("TLS %+v", resp.TLS)
	}
}
