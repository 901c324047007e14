package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/collectortest"
)

const expiredHint = "create a new one with `tillwatch-collector token create`"

// TestExpiredTokenIs401 moves the collector's clock past a token's expiry:
// the token gets a 401 that says why and what to do, counted apart from
// unknown tokens, while the agent credential it enrolled keeps working.
func TestExpiredTokenIs401(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	r := e.do("GET", api.PathMetrics, e.token(api.RoleAnalyst), nil, nil)
	if !strings.Contains(string(r.body), `tillwatch_collector_auth_failures_total{reason="expired"} 0`) {
		t.Errorf("metrics lack a pre-created expired reason:\n%s", r.body)
	}

	exp := e.clk.Now().Add(time.Hour)
	enrolTok, err := e.st.CreateToken(ctx, api.RoleSensor, "", exp, 0)
	if err != nil {
		t.Fatal(err)
	}
	analystTok, err := e.st.CreateToken(ctx, api.RoleAnalyst, "", exp, 0)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := e.client(enrolTok).Enroll(ctx, api.EnrollRequest{HostID: "till-x", HostName: "till-x", OS: "linux", AgentVersion: "1.0.0", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatalf("enrol before expiry: %v", err)
	}
	if r := e.do("GET", api.PathHosts, analystTok, nil, nil); r.code != 200 {
		t.Fatalf("hosts before expiry: %d %s", r.code, r.body)
	}

	e.clk.Add(time.Hour)
	wantMsg := "token expired (at " + exp.UTC().Format(time.RFC3339) + "); " + expiredHint
	for _, tc := range []struct {
		method, path, tok string
		body              []byte
	}{
		{"POST", api.PathEnroll, enrolTok, []byte(`{"host_id":"till-y","host_name":"till-y","os":"linux","agent_version":"1.0.0"}`)},
		{"GET", api.PathHosts, analystTok, nil},
	} {
		r := e.do(tc.method, tc.path, tc.tok, nil, tc.body)
		if r.code != 401 || r.errMsg() != wantMsg {
			t.Errorf("%s %s with an expired token: %d %q, want 401 %q", tc.method, tc.path, r.code, r.errMsg(), wantMsg)
		}
		if h := r.hdr.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
			t.Errorf("%s %s: WWW-Authenticate %q", tc.method, tc.path, h)
		}
	}
	// The client surfaces the server's message.
	_, err = e.client(enrolTok).Enroll(ctx, api.EnrollRequest{HostID: "till-z", HostName: "till-z", OS: "linux", AgentVersion: "1.0.0", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	var he *client.HTTPError
	if !errors.As(err, &he) || he.StatusCode != 401 || !strings.Contains(err.Error(), "token expired") {
		t.Errorf("client enrol with an expired token: %v", err)
	}
	// An unknown token is still just unknown.
	if r := e.do("GET", api.PathHosts, "tw_unknown", nil, nil); r.code != 401 || r.errMsg() != "unknown token" {
		t.Errorf("unknown token: %d %q", r.code, r.errMsg())
	}
	// Agent credentials never expire, whatever the enrolment token did.
	if _, err := e.client(enr.Credential).Heartbeat(ctx, api.Heartbeat{HostID: "till-x"}); err != nil {
		t.Errorf("heartbeat with the agent credential after the enrolment token expired: %v", err)
	}

	r = e.do("GET", api.PathMetrics, e.token(api.RoleAnalyst), nil, nil)
	for _, want := range []string{
		`tillwatch_collector_auth_failures_total{reason="expired"} 3`,
		`tillwatch_collector_auth_failures_total{reason="unknown"} 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestExpiredTokenOnRealCollector waits out a real token on a collector
// running on real time.
func TestExpiredTokenOnRealCollector(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	ctx := context.Background()
	exp := time.Now().Add(time.Second)
	tok := c.TokenExpiring(api.RoleAnalyst, exp)
	if time.Until(exp) > 500*time.Millisecond { // skip the check on a machine too slow for it
		if _, err := c.Client(tok).Hosts(ctx); err != nil {
			t.Fatalf("hosts before expiry: %v", err)
		}
	}
	time.Sleep(time.Until(exp) + 50*time.Millisecond)
	_, err := c.Client(tok).Hosts(ctx)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.StatusCode != 401 || !strings.Contains(err.Error(), "token expired") ||
		!strings.Contains(err.Error(), expiredHint) {
		t.Fatalf("hosts after expiry: %v, want 401 token expired", err)
	}
}
