package console

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// tallyTTL is how long the alert window's tally is reused: the stores
// page's refresh interval, so every console open on the fleet shares one
// aggregate query per interval.
const tallyTTL = 10 * time.Second

// tallyCache keeps the alert window's per-host tally (store.Overview) for
// up to tallyTTL. An alert stored through this collector drops it
// (Console.Observe), so a new attack shows on the next refresh; an alert
// stored by another collector sharing the store shows within tallyTTL.
// Hosts, heartbeats and commands are read on every load: they are cheap,
// and a degraded component or an acknowledgement must not wait.
type tallyCache struct {
	src    store.Overview
	window time.Duration
	ttl    time.Duration

	mu  sync.Mutex // held while querying: concurrent loads wait for one query
	at  time.Time
	gen uint64 // the generation val was read at
	val map[string]store.AlertTally

	cur atomic.Uint64 // bumped by invalidate
}

func (tc *tallyCache) get(ctx context.Context, now time.Time) (map[string]store.AlertTally, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	gen := tc.cur.Load()
	if tc.val != nil && gen == tc.gen && !now.Before(tc.at) && now.Sub(tc.at) < tc.ttl {
		return tc.val, nil
	}
	v, err := tc.src.AlertTally(ctx, now.Add(-tc.window))
	if err != nil {
		return nil, err
	}
	// An alert stored while the query ran bumped cur past gen: the next
	// load asks again.
	tc.val, tc.at, tc.gen = v, now, gen
	return v, nil
}

func (tc *tallyCache) invalidate() { tc.cur.Add(1) }

// Observe is told about every batch a sensor had stored (the collector
// server's Observer); a batch with an alert drops the cached tally.
func (c *Console) Observe(docs []store.Doc) {
	for i := range docs {
		if docs[i].Kind == event.KindAlert {
			c.tally.invalidate()
			return
		}
	}
}
