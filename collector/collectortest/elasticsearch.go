package collectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
)

// ESCollector is a running collector whose store is Elasticsearch: the real
// server on a loopback listener with its own CA, as Start, but storing into
// a cluster (the test node of `make es-up`, or whatever o.URL names).
type ESCollector struct {
	URL    string
	CAFile string
	Addr   string
	Store  *elasticsearch.Store
	// Registry holds the collector's and the store's metrics.
	Registry *prometheus.Registry
	t        testing.TB
	stop     context.CancelFunc
	done     chan error
}

// StartElasticsearch starts a collector on 127.0.0.1 (any free port) backed
// by an Elasticsearch store opened with o. o.URL is required; o.Namespace
// "" means a fresh random one, so tests do not see each other's data. The
// collector is stopped, and its state indices deleted, when the test ends
// (data streams stay where the cluster cannot delete them; see
// docs/elasticsearch-testing.md).
func StartElasticsearch(t testing.TB, o elasticsearch.Options) *ESCollector {
	t.Helper()
	if o.URL == "" {
		t.Fatal("collectortest: StartElasticsearch needs an Elasticsearch URL")
	}
	if o.Namespace == "" {
		b := make([]byte, 6)
		rand.Read(b)
		o.Namespace = "t" + hex.EncodeToString(b)
	}
	reg := prometheus.NewRegistry()
	if o.Registry == nil {
		o.Registry = reg
	}
	dir := t.TempDir()
	bundle, err := pki.Ensure(dir, pki.Options{})
	if err != nil {
		t.Fatalf("collectortest: pki: %v", err)
	}
	ctx, cancelOpen := context.WithTimeout(context.Background(), time.Minute)
	st, err := elasticsearch.Open(ctx, o)
	cancelOpen()
	if err != nil {
		t.Fatalf("collectortest: store: %v", err)
	}
	srv, err := server.New(server.Options{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		st.Close()
		t.Fatalf("collectortest: server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		t.Fatalf("collectortest: listen: %v", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	c := &ESCollector{
		URL: "https://" + ln.Addr().String(), Addr: ln.Addr().String(), CAFile: filepath.Join(dir, "ca.pem"),
		Store: st, Registry: reg, t: t, stop: cancel, done: make(chan error, 1),
	}
	go func() { c.done <- srv.Serve(sctx, ln, bundle.TLSConfig()) }()
	t.Cleanup(c.Stop)
	return c
}

// Stop shuts the collector down and deletes the store's state indices
// (idempotent).
func (c *ESCollector) Stop() {
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Store.Client().Indices.Delete(c.Store.StateIndices(),
		c.Store.Client().Indices.Delete.WithContext(ctx),
		c.Store.Client().Indices.Delete.WithIgnoreUnavailable(true))
	if err != nil {
		c.t.Logf("collectortest: delete state indices: %v", err)
		return
	}
	res.Body.Close()
}

// Token creates a token of role.
func (c *ESCollector) Token(role string) string {
	c.t.Helper()
	tok, err := c.Store.CreateToken(context.Background(), role, "", time.Time{})
	if err != nil {
		c.t.Fatalf("collectortest: token: %v", err)
	}
	return tok
}

// Client returns a client pinned to the collector's CA holding tok.
func (c *ESCollector) Client(tok string) *client.Client {
	c.t.Helper()
	cl, err := client.New(client.Config{URL: c.URL, CAFile: c.CAFile, Token: tok, Timeout: 10 * time.Second})
	if err != nil {
		c.t.Fatalf("collectortest: client: %v", err)
	}
	return cl
}
