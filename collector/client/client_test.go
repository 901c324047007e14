package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/pki"
)

// tlsServer serves h over TLS with a fresh collector CA and returns the
// server and that CA.
func tlsServer(t *testing.T, h http.Handler) (*httptest.Server, []byte) {
	t.Helper()
	b, err := pki.Ensure(t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = b.TLSConfig()
	// httptest adds its own certificate when Certificates is empty, and
	// crypto/tls prefers it to GetCertificate for a client without SNI.
	srv.TLS.Certificates = []tls.Certificate{*b.Current()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, b.CAPEM
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	b, _ := pki.Ensure(dir, pki.Options{})
	notPEM := filepath.Join(dir, "junk.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok file", Config{URL: "https://127.0.0.1:8443", CAFile: caFile}, ""},
		{"ok pem", Config{URL: "https://collector.example:8443/", CAPEM: b.CAPEM}, ""},
		{"http", Config{URL: "http://127.0.0.1:8443", CAFile: caFile}, "must start with https://"},
		{"no scheme", Config{URL: "127.0.0.1:8443", CAFile: caFile}, "https://"},
		{"empty url", Config{CAFile: caFile}, "not a URL"},
		{"no CA", Config{URL: "https://127.0.0.1:8443"}, "no collector CA given"},
		{"missing CA", Config{URL: "https://127.0.0.1:8443", CAFile: filepath.Join(dir, "nope.pem")}, "read collector CA (--ca)"},
		{"junk CA", Config{URL: "https://127.0.0.1:8443", CAFile: notPEM}, "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	b, _ := pki.Ensure(t.TempDir(), pki.Options{})
	c, err := New(Config{URL: "https://" + addr, CAPEM: b.CAPEM, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Hosts(context.Background())
	t.Logf("unreachable: %v", err)
	want := "collector https://" + addr + " unreachable: dial tcp " + addr + ": "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q, want one line starting %q", err, want)
	}
	if IsPermanent(err) {
		t.Error("unreachable collector reported as permanent; the shipper must retry")
	}
}

func TestWrongCA(t *testing.T) {
	t.Parallel()
	srv, _ := tlsServer(t, http.NotFoundHandler())
	other, _ := pki.Ensure(t.TempDir(), pki.Options{}) // another collector's CA
	c, err := New(Config{URL: srv.URL, CAPEM: other.CAPEM})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Hosts(context.Background())
	t.Logf("wrong CA: %v", err)
	if err == nil || !strings.Contains(err.Error(), "does not match the pinned CA (--ca") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q", err)
	}
	// The system roots are not consulted either: a publicly trusted
	// certificate would fail the same way (the pool holds only our CA).
}

func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	srv, ca := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := 0
		fmt.Sscan(r.URL.Query().Get("code"), &code)
		if code == 0 {
			code = 401
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if code == 502 {
			io.WriteString(w, "<html>bad gateway\n</html>") // a proxy, not the collector
			return
		}
		json.NewEncoder(w).Encode(api.Error{Error: "unknown token"})
	}))
	c, err := New(Config{URL: srv.URL, CAPEM: ca, Token: "tw_x"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		code      int
		msg       string
		permanent bool
	}{
		{401, "collector refused the token (401): unknown token", true},
		{403, "collector denied the request (403): unknown token", true},
		{400, "collector rejected the request (400): unknown token", true},
		{413, "collector refused the batch as too large (413): unknown token", true},
		{408, "collector rejected the request (408): unknown token", false},
		{429, "collector is rate limiting (429): unknown token", false},
		{503, "collector failed (503): unknown token", false},
		{502, "collector failed (502): <html>bad gateway </html>", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			t.Parallel()
			err := c.do(context.Background(), http.MethodGet, "/x", map[string][]string{"code": {fmt.Sprint(tt.code)}}, nil, nil, nil, maxSmall)
			var he *HTTPError
			if !errors.As(err, &he) || he.StatusCode != tt.code {
				t.Fatalf("err = %v", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("message %q, want %q", err.Error(), tt.msg)
			}
			if IsPermanent(err) != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v", !tt.permanent, tt.permanent)
			}
		})
	}
	if IsPermanent(nil) || IsPermanent(errors.New("x")) || IsPermanent(context.DeadlineExceeded) {
		t.Error("non-HTTP errors must be retryable")
	}
}

func TestRequestsCarryTokenAndGzip(t *testing.T) {
	t.Parallel()
	type seen struct {
		auth, enc, ua, query string
		body                 string
	}
	got := make(chan seen, 4)
	srv, ca := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{auth: r.Header.Get("Authorization"), enc: r.Header.Get("Content-Encoding"), ua: r.UserAgent(), query: r.URL.RawQuery}
		var body io.Reader = r.Body
		if s.enc == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Error(err)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		s.body = string(b)
		got <- s
		switch r.URL.Path {
		case api.PathEvents:
			json.NewEncoder(w).Encode(api.IngestResponse{Accepted: 1})
		case api.PathAlerts:
			io.WriteString(w, `{"alerts":[{"event":{"id":"a"}}]}`)
		}
	}))
	c, err := New(Config{URL: srv.URL, CAPEM: ca, Token: "tw_first", UserAgent: "tillwatch-sensor/9"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := c.SendEvents(ctx, []byte("{\"a\":1}\n"))
	if err != nil || resp.Accepted != 1 {
		t.Fatalf("%+v %v", resp, err)
	}
	s := <-got
	if s.auth != "Bearer tw_first" || s.enc != "gzip" || s.body != "{\"a\":1}\n" || s.ua != "tillwatch-sensor/9" {
		t.Fatalf("events request %+v", s)
	}
	since := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	alerts, err := c.WithToken("tw_second").Alerts(ctx, AlertQuery{Since: since, HostID: "h", RuleID: "r", Limit: 7})
	if err != nil || len(alerts) != 1 {
		t.Fatalf("%v %v", alerts, err)
	}
	s = <-got
	if s.auth != "Bearer tw_second" || s.query != "host=h&limit=7&rule=r&since=2025-05-01T10%3A00%3A00Z" {
		t.Fatalf("alerts request %+v", s)
	}
	if c.token != "tw_first" {
		t.Error("WithToken changed the original client")
	}
}

// TestOversizedCollectorAnswersAreNotBuffered: a compromised collector
// answers a sensor's long-poll, acknowledgement and rule fetch with an
// endless body (or announces a huge one); the client stops at the bound
// for that kind of answer instead of buffering up to 256 MiB first.
func TestOversizedCollectorAnswersAreNotBuffered(t *testing.T) {
	t.Parallel()
	const endless = 300 << 20
	cases := []struct {
		name     string
		announce bool // send a Content-Length over the bound
		call     func(c *Client) error
		limit    int64
	}{
		{"long-poll streamed", false, func(c *Client) error { _, err := c.PendingCommands(context.Background(), 0); return err }, api.MaxPendingResponse},
		{"rule bundle streamed", false, func(c *Client) error { _, err := c.SensorRules(context.Background(), 0); return err }, maxRules},
		{"rule bundle announced", true, func(c *Client) error { _, err := c.SensorRules(context.Background(), 0); return err }, maxRules},
		{"heartbeat streamed", false, func(c *Client) error { _, err := c.Heartbeat(context.Background(), api.Heartbeat{}); return err }, maxSmall},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wrote := make(chan int64, 1)
			srv, ca := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tc.announce {
					w.Header().Set("Content-Length", strconv.Itoa(endless))
				}
				chunk := bytes.Repeat([]byte(" "), 64<<10)
				var n int64
				if k, err := w.Write([]byte(`{"commands":[`)); err == nil {
					n += int64(k)
				}
				for n < endless {
					k, err := w.Write(chunk)
					n += int64(k)
					if err != nil {
						break
					}
				}
				wrote <- n
			}))
			c, err := New(Config{URL: srv.URL, CAPEM: ca, Token: "tw_x", Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(c)
			if !errors.Is(err, ErrTooLarge) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line wrapping ErrTooLarge", err)
			}
			select {
			case n := <-wrote:
				// Socket buffers take a few MiB beyond what was read.
				if n >= endless {
					t.Fatalf("the collector wrote all %d bytes: the client read on past its bound %d", n, tc.limit)
				}
			case <-time.After(time.Minute):
				t.Fatal("the collector's write never failed: the client kept reading")
			}
		})
	}
}
