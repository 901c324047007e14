package elasticsearch

// Documents in flight: a sensor whose batch outlives the collector's
// deadline (Elasticsearch slow, not down) is answered 503 and sends the
// batch again, while the first attempt's items are still queued for the
// node or already stored. Sending them again made the node write and
// refuse (409) each one a second time: 0.4-1.4% of the documents of a
// full-speed ingest run. Instead the store remembers every document it
// handed to the bulk indexer until its answer is taken, and for a while
// after its first caller gave up; the resend waits for that answer.
//
// Exactly one caller reports a document created: the caller that handed
// it over, or the first resend after that caller gave up. Anyone else
// waiting on the same document (the same event id sent twice at once)
// sees it as a duplicate, as the node's 409 would have said.

import (
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
)

// flightKeep is how long an answer nobody took is kept for a resend; a
// sensor resends within seconds.
const flightKeep = 2 * time.Minute

// maxAbandoned bounds the answers kept for resends; beyond it the oldest
// kept are forgotten (a resend of those is answered 409 by the node).
const maxAbandoned = 1 << 20

// pruneEvery bounds how often the flights are scanned for old answers.
const pruneEvery = 10 * time.Second

// flight is one document handed to the bulk indexer.
type flight struct {
	done chan struct{} // closed when res is set
	res  itemResult
	// abandoned is when its caller gave up waiting; zero while one waits.
	// Guarded by flights.mu.
	abandoned time.Time
}

func newFlight() *flight { return &flight{done: make(chan struct{})} }

// finish records the node's answer (exactly once).
func (f *flight) finish(r itemResult) {
	f.res = r
	close(f.done)
}

// resultFor is the answer for a caller: the owner gets the node's answer,
// anyone else sharing the flight gets "created" as duplicate.
func (f *flight) resultFor(owner bool) itemResult {
	if !owner && f.res.out == created {
		return itemResult{out: duplicate}
	}
	return f.res
}

// flights are the documents in flight by event id. The zero value is
// ready to use.
type flights struct {
	mu        sync.Mutex
	m         map[string]*flight
	abandoned int
	pruned    time.Time
}

// join returns the flight for id: one in flight already (joined; owner if
// its caller gave up, so this caller takes over reporting it), or a new
// one to hand over (owner). mine holds the flights the calling batch owns:
// an id twice in one batch is sent twice, as before, and the second is
// answered 409 (a new flight kept out of the map).
func (fl *flights) join(id string, mine map[*flight]bool) (f *flight, joined, owner bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := time.Now()
	fl.prune(now)
	if fl.m == nil {
		fl.m = map[string]*flight{}
	}
	if f, ok := fl.m[id]; ok {
		if !mine[f] {
			if !f.abandoned.IsZero() {
				f.abandoned = time.Time{}
				fl.abandoned--
				return f, true, true
			}
			return f, true, false
		}
		return newFlight(), false, true
	}
	f = newFlight()
	fl.m[id] = f
	return f, false, true
}

// drop forgets f, which was never handed over, and answers whoever joined
// it meanwhile with err (retryable).
func (fl *flights) drop(id string, f *flight, err error) {
	fl.mu.Lock()
	if fl.m[id] == f {
		delete(fl.m, id)
	}
	fl.mu.Unlock()
	f.finish(itemResult{out: retryable, reason: err.Error()})
}

// abandon marks the flights a caller owns as given up: their answers are
// kept for a resend.
func (fl *flights) abandon(fs []*flight, mine map[*flight]bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := time.Now()
	for _, f := range fs {
		if mine[f] && f.abandoned.IsZero() {
			f.abandoned = now
			fl.abandoned++
		}
	}
}

// release forgets the flights of docs[todo] whose answers were taken.
func (fl *flights) release(docs []store.Doc, todo []int, fs []*flight) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for k, i := range todo {
		id := docs[i].EventID
		if f := fl.m[id]; f == fs[k] && f.abandoned.IsZero() {
			delete(fl.m, id)
		}
	}
}

// prune forgets answers kept longer than flightKeep, at most every
// pruneEvery (or at once when too many are kept). Called with mu held.
func (fl *flights) prune(now time.Time) {
	if fl.abandoned == 0 || (now.Sub(fl.pruned) < pruneEvery && fl.abandoned < maxAbandoned) {
		return
	}
	fl.pruned = now
	keep := flightKeep
	if fl.abandoned >= maxAbandoned {
		keep = 0
	}
	for id, f := range fl.m {
		if f.abandoned.IsZero() || now.Sub(f.abandoned) < keep {
			continue
		}
		select {
		case <-f.done:
		default:
			if keep > 0 {
				continue // still queued: its resend is likely still to come
			}
		}
		delete(fl.m, id)
		fl.abandoned--
	}
}

// inFlight is how many documents are known (tests).
func (fl *flights) inFlight() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return len(fl.m)
}
