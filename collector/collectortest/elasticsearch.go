package collectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/collector/store/spooled"
)

// ESCollector is a running collector whose store is Elasticsearch: the real
// server on a loopback listener with its own CA, as Start, but storing into
// a cluster (the test node of `make es-up`, or whatever o.URL names).
type ESCollector struct {
	*serving
	Store *elasticsearch.Store
	// Spool is the disk spool in front of Store that the server writes to.
	Spool *spooled.Store
	// Registry holds the collector's and the store's metrics.
	Registry *prometheus.Registry
}

// StartElasticsearch starts a collector on 127.0.0.1 (any free port) backed
// by an Elasticsearch store opened with o. o.URL is required; o.Namespace
// "" means a fresh random one, so tests do not see each other's data. The
// collector is stopped, and its state indices deleted, when the test ends
// (data streams stay where the cluster cannot delete them; see
// docs/elasticsearch-testing.md).
func StartElasticsearch(t testing.TB, o elasticsearch.Options) *ESCollector {
	t.Helper()
	return StartElasticsearchIn(t, o, t.TempDir())
}

// StartElasticsearchIn is StartElasticsearch with its CA, certificate and
// kill-switch keys in dir: collectors started on one dir and one namespace
// are one deployment of several collectors sharing a cluster, as sensors
// see it (one CA, one command signing key).
func StartElasticsearchIn(t testing.TB, o elasticsearch.Options, dir string) *ESCollector {
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
	ctx, cancelOpen := context.WithTimeout(context.Background(), time.Minute)
	st, err := elasticsearch.Open(ctx, o)
	cancelOpen()
	if err != nil {
		t.Fatalf("collectortest: store: %v", err)
	}
	// As tillwatch-collector runs it: a disk spool in front of the cluster.
	sp, err := spooled.Wrap(st, spooled.Options{Dir: filepath.Join(dir, "store-spool-"+o.Namespace), Registerer: reg,
		Attempt: 2 * time.Second})
	if err != nil {
		st.Close()
		t.Fatalf("collectortest: spool: %v", err)
	}
	c := &ESCollector{serving: serve(t, sp, dir, "127.0.0.1:0", reg, nil), Store: st, Spool: sp, Registry: reg}
	t.Cleanup(c.Stop)
	return c
}

// Stop shuts the collector down and deletes the store's state indices
// (idempotent).
func (c *ESCollector) Stop() {
	if c.stop == nil {
		return
	}
	c.shutdown()
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
