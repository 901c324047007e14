// Package collectortest starts a real collector inside a test: the real
// server on a loopback listener with its own CA, backed by a real SQLite
// store in a temporary directory. Sensor-side tests (shipper, uplink) use it
// instead of a fake, so they exercise the real protocol.
package collectortest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
)

// Collector is a running collector.
type Collector struct {
	URL    string
	CAFile string
	Addr   string
	Store  *sqlite.Store
	dir    string
	t      testing.TB
	stop   context.CancelFunc
	done   chan error
}

// Start starts a collector on 127.0.0.1 (addr "" = any free port) with its
// data in dir (t.TempDir() if ""); it is stopped when the test ends.
func Start(t testing.TB, dir, addr string) *Collector {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	bundle, err := pki.Ensure(dir, pki.Options{})
	if err != nil {
		t.Fatalf("collectortest: pki: %v", err)
	}
	st, err := sqlite.Open(filepath.Join(dir, "tillwatch.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("collectortest: store: %v", err)
	}
	srv, err := server.New(server.Options{Store: st, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("collectortest: server: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("collectortest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Collector{
		URL: "https://" + ln.Addr().String(), Addr: ln.Addr().String(), CAFile: filepath.Join(dir, "ca.pem"),
		Store: st, dir: dir, t: t, stop: cancel, done: make(chan error, 1),
	}
	go func() { c.done <- srv.Serve(ctx, ln, bundle.TLSConfig()) }()
	t.Cleanup(c.Stop)
	return c
}

// Stop shuts the collector down (idempotent); its data stays in dir.
func (c *Collector) Stop() {
	if c.stop == nil {
		return
	}
	c.stop()
	c.stop = nil
	select {
	case err := <-c.done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
			c.t.Errorf("collectortest: serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		c.t.Errorf("collectortest: server did not stop within 20s")
	}
	_ = c.Store.Close()
}

// Dir is the collector's data directory.
func (c *Collector) Dir() string { return c.dir }

// Token creates a token of role that never expires.
func (c *Collector) Token(role string) string {
	c.t.Helper()
	return c.TokenExpiring(role, time.Time{})
}

// TokenExpiring creates a token of role that stops working at expires
// (the zero time: never).
func (c *Collector) TokenExpiring(role string, expires time.Time) string {
	c.t.Helper()
	tok, err := c.Store.CreateToken(context.Background(), role, "", expires)
	if err != nil {
		c.t.Fatalf("collectortest: token: %v", err)
	}
	return tok
}

// Client returns a client pinned to the collector's CA holding tok.
func (c *Collector) Client(tok string) *client.Client {
	c.t.Helper()
	cl, err := client.New(client.Config{URL: c.URL, CAFile: c.CAFile, Token: tok, Timeout: 10 * time.Second})
	if err != nil {
		c.t.Fatalf("collectortest: client: %v", err)
	}
	return cl
}

// Alerts returns every stored alert of host.
func (c *Collector) Alerts(host string) []map[string]any {
	c.t.Helper()
	out, err := c.Client(c.Token(api.RoleAnalyst)).Alerts(context.Background(), client.AlertQuery{HostID: host, Limit: 10000, Since: time.Unix(0, 0)})
	if err != nil {
		c.t.Fatalf("collectortest: alerts: %v", err)
	}
	return out
}
