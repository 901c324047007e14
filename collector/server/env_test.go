package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// clock is a settable test clock shared by store and server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a real collector: PKI in a temp dir, SQLite, HTTPS on 127.0.0.1.
type env struct {
	t     *testing.T
	st    *sqlite.Store
	url   string
	caPEM []byte
	hc    *http.Client // raw HTTP with the pinned CA
	clk   *clock
	// Responder keys the collector accepts approvals from.
	alice, bob ed25519.PrivateKey
	srv        *server.Server
}

func newEnv(t *testing.T, tweak ...func(*server.Options)) *env {
	t.Helper()
	dir := t.TempDir()
	bundle, err := pki.Ensure(dir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC()}
	st, err := sqlite.Open(filepath.Join(dir, "tillwatch.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	collectorKey := newPriv(t)
	alice, bob := newPriv(t), newPriv(t)
	var srv *server.Server
	cmds, err := command.New(command.Options{
		Store: st, Key: collectorKey, Now: clk.Now,
		Responders: []killswitch.PublicKey{responderKey(alice, "alice"), responderKey(bob, "bob")},
		Notify:     func() { srv.NotifyCommands() },
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := server.Options{
		Commands: cmds,
		Store:    st,
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(),
		Now:      clk.Now,
	}
	for _, f := range tweak {
		f(&opts)
	}
	srv, err = server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, bundle.TLSConfig()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		st.Close()
	})
	pool, _ := pki.CertPool(bundle.CAPEM)
	return &env{
		t:     t,
		st:    st,
		url:   "https://" + ln.Addr().String(),
		caPEM: bundle.CAPEM,
		hc:    &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second},
		clk:   clk,
		alice: alice,
		bob:   bob,
		srv:   srv,
	}
}

func newPriv(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func responderKey(priv ed25519.PrivateKey, name string) killswitch.PublicKey {
	pub := priv.Public().(ed25519.PublicKey)
	return killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: name}
}

// testWriter sends server logs to the test log, shown only on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) client(token string) *client.Client {
	e.t.Helper()
	c, err := client.New(client.Config{URL: e.url, CAPEM: e.caPEM, Token: token, UserAgent: "server-test"})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) token(role string) string {
	e.t.Helper()
	tok, err := e.st.CreateToken(context.Background(), role, "", time.Time{}, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// enroll enrols hostID and returns its agent credential.
func (e *env) enroll(hostID string) string {
	e.t.Helper()
	resp, err := e.client(e.token(api.RoleSensor)).Enroll(context.Background(),
		api.EnrollRequest{HostID: hostID, HostName: hostID, OS: "linux", AgentVersion: "1.0.0", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Credential
}

type reply struct {
	code int
	hdr  http.Header
	body []byte
}

func (r reply) errMsg() string {
	var ae api.Error
	json.Unmarshal(r.body, &ae)
	return ae.Error
}

// do sends a raw request; hdr may set Content-Encoding and the like.
func (e *env) do(method, path, token string, hdr map[string]string, body []byte) reply {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// alertLine is one valid alert NDJSON line.
func alertLine(id, host, rule string, ts time.Time) string {
	b, _ := json.Marshal(map[string]any{
		"@timestamp": ts.UTC().Format(time.RFC3339Nano),
		"message":    "test alert <" + id + ">",
		"event":      map[string]any{"id": id, "kind": "alert", "category": []string{"process"}, "severity": 73},
		"host":       map[string]any{"id": host, "name": host},
		"agent":      map[string]any{"id": "a", "type": "tillwatch-sensor", "version": "1.0.0"},
		"rule":       map[string]any{"id": rule, "name": rule, "ruleset": "rmm"},
	})
	return string(b)
}

func ndjson(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

func httpStatus(err error) int {
	var he *client.HTTPError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("not JSON (%v): %s", err, b)
	}
}
