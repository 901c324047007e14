package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
)

// zeros is an endless stream of filler, so a huge body costs the test nothing.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > z.left {
		n = z.left
	}
	for i := range p[:n] {
		p[i] = 'x'
	}
	z.left -= n
	return int(n), nil
}

func pinnedHTTP(t *testing.T, c *collectortest.Collector) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func agentToken(t *testing.T, c *collectortest.Collector, host string) string {
	t.Helper()
	enr, err := c.Client(c.Token(api.RoleSensor)).Enroll(context.Background(), api.EnrollRequest{HostID: host, HostName: host, AgentVersion: "1", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	return enr.Credential
}

func TestHundredMegabyteBatchIsRefused(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	tok := agentToken(t, c, "till-h1")
	req, _ := http.NewRequest(http.MethodPost, c.URL+api.PathEvents, &zeros{left: 100 << 20})
	req.Header.Set("Authorization", "Bearer "+tok)
	req.ContentLength = 100 << 20
	resp, err := pinnedHTTP(t, c).Do(req)
	if err != nil {
		// The server may close the connection once it has answered; the
		// client then reports the write error instead of the answer.
		if !strings.Contains(err.Error(), "broken pipe") && !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("request: %v", err)
		}
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
	}
	// The collector is still there and serves the next request.
	if _, err := c.Client(c.Token(api.RoleAnalyst)).Hosts(context.Background()); err != nil {
		t.Fatalf("collector unusable after the huge batch: %v", err)
	}
}

func TestDeeplyNestedJSONIsRejectedPerLine(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	agent := c.Client(agentToken(t, c, "till-h2"))
	deep := strings.Repeat(`{"a":`, 50000) + "1" + strings.Repeat("}", 50000)
	good := `{"@timestamp":"2026-11-23T10:00:00Z","event":{"kind":"event","id":"ok-1"},"host":{"id":"till-h2","name":"x"}}`
	resp, err := agent.SendEvents(context.Background(), []byte(deep+"\n"+good+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 1 || len(resp.Rejected) != 1 || resp.Rejected[0].Line != 1 {
		t.Errorf("response %+v: want the nested line rejected, the good one kept", resp)
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	pem, _ := os.ReadFile(c.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", c.Addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Send half a request line and then nothing, as a slowloris client does.
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := new(bytes.Buffer)
	_, _ = io.Copy(buf, conn) // returns when the server closes the connection
	if waited := time.Since(start); waited > 25*time.Second {
		t.Fatalf("server kept a header-less connection open for %s", waited)
	}
}
