package store

import (
	"context"
	"sync"
	"time"
)

// Credential cache. Every request of a sensor carries its agent
// credential, and checking it in the store costs reads there (two
// real-time document reads in Elasticsearch: the token, then the host whose
// current credential it must be). A store may remember the credentials it
// confirmed, under these rules, so that revocation still takes effect
// everywhere within a bounded time:
//
//   - the store keeps a credentials generation that every change able to
//     end a credential's validity bumps after writing it: revocation,
//     enrolment (re-enrolment replaces the host's credential; an enrolment
//     token loses a use);
//   - each collector reads the generation every CredentialPoll and drops
//     everything it remembered when it changed; an entry is also tagged
//     with the generation read before the store was asked, so an answer
//     read before a revocation is never used after the collector has seen
//     that revocation's bump;
//   - a remembered credential is used only while the last successful read
//     of the generation started less than CredentialWindow ago: a
//     collector that cannot read it (a partitioned or slow store) asks the
//     store every time, and an expiry is checked on every use.
//
// So a credential revoked through any collector is refused by every
// collector sharing the store within CredentialWindow (about CredentialPoll
// normally), and at once by the collector that revoked it.

// CredentialPoll is how often a collector reads the credentials generation.
const CredentialPoll = time.Second

// CredentialWindow bounds how long a revoked credential may still be
// accepted by a collector that did not revoke it.
const CredentialWindow = 5 * time.Second

// CredentialMaxAge bounds how long one answer of the store is used, as a
// last resort: should a change be written but its bump fail (the store
// went away in between; the change is reported failed), other collectors
// still ask the store again after this long.
const CredentialMaxAge = time.Minute

// maxCredentials bounds the remembered credentials (a fleet is thousands of
// sensors); a full cache starts over.
const maxCredentials = 1 << 17

// CredentialCache remembers confirmed agent credentials for a store. The
// zero value is not usable: use NewCredentialCache.
type CredentialCache struct {
	gen func(context.Context) (int64, error)
	now func() time.Time

	mu     sync.Mutex
	cur    CredentialStamp
	readAt time.Time // when the last successful read of the generation started
	m      map[string]credential
}

// CredentialStamp is what an answer is tagged with: the store's generation
// and the count of this collector's own changes (Forget), both as read
// before the store was asked.
type CredentialStamp struct{ gen, local int64 }

type credential struct {
	role, hostID string
	expires      time.Time // zero: never
	at           time.Time // when the store was asked
	stamp        CredentialStamp
}

// NewCredentialCache returns a cache reading the generation with gen; now
// is the clock (nil: time.Now). Start Run before using it; until its first
// read, every lookup misses.
func NewCredentialCache(gen func(context.Context) (int64, error), now func() time.Time) *CredentialCache {
	if now == nil {
		now = time.Now
	}
	return &CredentialCache{gen: gen, now: now, m: map[string]credential{}}
}

// Run reads the generation every CredentialPoll until ctx ends.
func (c *CredentialCache) Run(ctx context.Context) {
	t := time.NewTicker(CredentialPoll)
	defer t.Stop()
	for {
		c.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads the generation once (Run calls it; tests may too).
func (c *CredentialCache) Poll(ctx context.Context) {
	start := c.now()
	rctx, cancel := context.WithTimeout(ctx, CredentialWindow)
	g, err := c.gen(rctx)
	cancel()
	if err != nil {
		return // readAt ages: past the window, every lookup misses
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g != c.cur.gen {
		clear(c.m)
		c.cur.gen = g
	}
	if start.After(c.readAt) {
		c.readAt = start
	}
}

// Stamp is what to tag an answer with: take it before asking the store. ok
// is false when the cache is not to be used (the generation not read
// within the window).
func (c *CredentialCache) Stamp() (s CredentialStamp, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.fresh()
}

func (c *CredentialCache) fresh() bool {
	return !c.readAt.IsZero() && c.now().Sub(c.readAt) < CredentialWindow
}

// Get returns a remembered credential by token hash.
func (c *CredentialCache) Get(hash string) (role, hostID string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[hash]
	if !ok || e.stamp != c.cur || !c.fresh() || c.now().Sub(e.at) >= CredentialMaxAge {
		return "", "", false
	}
	if !e.expires.IsZero() && !c.now().Before(e.expires) {
		delete(c.m, hash)
		return "", "", false
	}
	return e.role, e.hostID, true
}

// Put remembers what the store confirmed for hash, read after Stamp
// answered s.
func (c *CredentialCache) Put(hash string, s CredentialStamp, role, hostID string, expires time.Time) {
	at := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != c.cur {
		return // a credential changed while the store was read
	}
	if len(c.m) >= maxCredentials {
		clear(c.m)
	}
	c.m[hash] = credential{role: role, hostID: hostID, expires: expires, at: at, stamp: s}
}

// Forget drops everything remembered, and every answer being read: the
// collector itself changed a credential (call it after the change is
// written), so its own revocations take effect at once.
func (c *CredentialCache) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
	c.cur.local++
}
