// Package collectortest starts a real collector inside a test: the real
// server on a loopback listener with its own CA, backed by a real SQLite
// store in a temporary directory. Sensor-side tests (shipper, uplink) use it
// instead of a fake, so they exercise the real protocol.
package collectortest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
)

// Collector is a running collector on SQLite.
type Collector struct {
	*serving
	Store *sqlite.Store
	dir   string
}

// Start starts a collector on 127.0.0.1 (addr "" = any free port) with its
// data in dir (t.TempDir() if ""); it is stopped when the test ends.
func Start(t testing.TB, dir, addr string) *Collector {
	t.Helper()
	return StartWithCampaign(t, dir, addr, nil)
}

// StartWithCampaign is Start with campaign detection under policy (nil:
// none, as Start).
func StartWithCampaign(t testing.TB, dir, addr string, policy *campaign.Policy) *Collector {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	st, err := sqlite.Open(filepath.Join(dir, "tillwatch.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("collectortest: store: %v", err)
	}
	c := &Collector{serving: serve(t, st, dir, addr, nil, policy), Store: st, dir: dir}
	t.Cleanup(c.Stop)
	return c
}

// Stop shuts the collector down (idempotent); its data stays in dir.
func (c *Collector) Stop() { c.shutdown() }

// Dir is the collector's data directory.
func (c *Collector) Dir() string { return c.dir }

// Alerts returns every stored alert of host.
func (c *Collector) Alerts(host string) []map[string]any {
	c.t.Helper()
	out, err := c.Client(c.Token(api.RoleAnalyst)).Alerts(context.Background(), client.AlertQuery{HostID: host, Limit: 10000, Since: time.Unix(0, 0)})
	if err != nil {
		c.t.Fatalf("collectortest: alerts: %v", err)
	}
	return out
}
