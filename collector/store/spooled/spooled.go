// Package spooled keeps a collector accepting events while its backend
// (Elasticsearch) is down: a batch the backend cannot take is written to a
// local disk spool — fsynced before the collector answers, so it confirms
// only what is durable — and replayed into the backend when it answers
// again. Event ids make the replay idempotent (the backend deduplicates),
// so a batch spooled after a partial write is still stored exactly once.
//
// What waits in the spool is not yet visible to queries; hosts' last_seen
// and sequence tracking catch up as the spool drains.
package spooled

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Backend is what the spool wraps: every store the collector runs on.
type Backend interface {
	store.Store
	store.CommandStore
	store.SequenceTracker
	store.Overview
}

// Options configure the spool.
type Options struct {
	// Dir holds the spooled batches (created 0700).
	Dir string
	// MaxBytes bounds the spool (default 1 GiB); beyond it batches are
	// refused (503) and the sensors keep them.
	MaxBytes int64
	// Attempt bounds one try of the backend before spooling (default 5s).
	Attempt time.Duration
	// AuthTTL is how long a credential the backend confirmed keeps
	// working while the backend does not answer (default 24h).
	AuthTTL    time.Duration
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Store is a Backend whose Ingest falls back to the spool.
type Store struct {
	Backend
	o Options

	mu     sync.Mutex
	next   int64 // next segment number
	bytes  int64 // spooled bytes
	depth  int   // spooled segments
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed bool

	authMu sync.Mutex
	auth   map[string]authEntry // token hash -> what the backend last said

	seqMu       sync.Mutex
	pendingSeqs map[string][]int64        // host -> numbers whose tracking failed
	spooledSeqs map[string]map[int64]bool // host -> numbers waiting in the spool (tracked on replay)

	spooledDocs prometheus.Counter
	replayed    prometheus.Counter
	depthGauge  prometheus.GaugeFunc
}

// segment is one spooled batch on disk.
type segment struct {
	Docs []wireDoc `json:"docs"`
}

type wireDoc struct {
	EventID, Kind, Dataset, HostID, RuleID, Ruleset, Origin string
	Timestamp, Ingested                                     time.Time
	Severity                                                int
	Sequence                                                int64
	JSON                                                    json.RawMessage
}

// Wrap opens (or recovers) the spool in o.Dir and starts replaying it.
func Wrap(b Backend, o Options) (*Store, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.Attempt <= 0 {
		o.Attempt = 5 * time.Second
	}
	if o.AuthTTL <= 0 {
		o.AuthTTL = 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With(logkey.Component, "store-spool")
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store spool: %w", err)
	}
	s := &Store{Backend: b, o: o, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		auth: map[string]authEntry{}, pendingSeqs: map[string][]int64{}, spooledSeqs: map[string]map[int64]bool{}}
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	for _, n := range segs {
		fi, err := os.Stat(s.path(n))
		if err == nil {
			s.bytes += fi.Size()
		}
		s.next = max(s.next, n+1)
	}
	s.depth = len(segs)
	if s.depth > 0 {
		o.Log.Warn("replaying batches spooled while the store was down", logkey.Count, s.depth, "dir", o.Dir)
	}
	s.spooledDocs = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tillwatch_collector", Name: "store_spooled_events_total",
		Help: "Events written to the collector's disk spool because the store did not answer."})
	s.replayed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tillwatch_collector", Name: "store_spool_replayed_events_total",
		Help: "Spooled events replayed into the store."})
	s.depthGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tillwatch_collector", Name: "store_spool_batches",
		Help: "Batches waiting in the collector's disk spool."}, func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(s.depth) })
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.spooledDocs, s.replayed, s.depthGauge} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	go s.drain()
	return s, nil
}

func (s *Store) path(n int64) string { return filepath.Join(s.o.Dir, fmt.Sprintf("%020d.json", n)) }

func (s *Store) segments() ([]int64, error) {
	entries, err := os.ReadDir(s.o.Dir)
	if err != nil {
		return nil, fmt.Errorf("store spool: %w", err)
	}
	var out []int64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

type authEntry struct {
	role, hostID string
	at           time.Time
}

// maxAuthCache bounds the credentials remembered for outages.
const maxAuthCache = 100000

// Authenticate asks the backend; while the backend does not answer, a
// credential it confirmed within AuthTTL keeps working, so sensors can
// still hand their batches to the spool. Unknown, revoked and expired
// tokens are forgotten at once; revocation during an outage takes effect
// when the backend answers again.
func (s *Store) Authenticate(ctx context.Context, token string) (string, string, error) {
	role, hostID, err := s.Backend.Authenticate(ctx, token)
	key := store.HashToken(token)
	s.authMu.Lock()
	defer s.authMu.Unlock()
	switch {
	case err == nil:
		if len(s.auth) >= maxAuthCache {
			clear(s.auth)
		}
		s.auth[key] = authEntry{role: role, hostID: hostID, at: time.Now()}
		return role, hostID, nil
	case errors.Is(err, store.ErrUnknownToken), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenUsedUp):
		delete(s.auth, key)
		return role, hostID, err
	}
	if e, ok := s.auth[key]; ok && time.Since(e.at) < s.o.AuthTTL {
		return e.role, e.hostID, nil
	}
	return role, hostID, err
}

// Enroll remembers the credential it issues, so a sensor enrolled just
// before an outage can still hand its batches to the spool.
func (s *Store) Enroll(ctx context.Context, req api.EnrollRequest, by store.Enroller) (api.EnrollResponse, error) {
	resp, err := s.Backend.Enroll(ctx, req, by)
	if err == nil {
		s.authMu.Lock()
		if len(s.auth) >= maxAuthCache {
			clear(s.auth)
		}
		s.auth[store.HashToken(resp.Credential)] = authEntry{role: api.RoleAgent, hostID: resp.HostID, at: time.Now()}
		s.authMu.Unlock()
	}
	return resp, err
}

// Ingest stores docs in the backend, or, when it is down (a failed batch
// and a failed ping; or a backlog from an outage is still draining, so
// sequence numbers are tracked in order), durably in the spool. Spooled docs count as accepted: they will be stored; the
// duplicates among them are found on replay.
func (s *Store) Ingest(ctx context.Context, docs []store.Doc) (int, int, error) {
	s.mu.Lock()
	backlog := s.depth > 0
	s.mu.Unlock()
	if !backlog {
		actx, cancel := context.WithTimeout(ctx, s.o.Attempt)
		acc, dup, err := s.Backend.Ingest(actx, docs)
		cancel()
		if err == nil || ctx.Err() != nil {
			return acc, dup, err
		}
		// Spool only for a backend that is down. One that answers but is
		// slow gets back-pressure instead (the sensor retries later):
		// spooling under load would grow a backlog that replays one batch
		// at a time.
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		perr := s.Backend.Ping(pctx)
		pcancel()
		if perr == nil {
			return acc, dup, err
		}
		s.o.Log.Warn("store is down; spooling the batch to disk", logkey.Count, len(docs), logkey.Error, err)
	}
	if err := s.spool(docs); err != nil {
		return 0, 0, fmt.Errorf("store unavailable and the spool refused the batch: %w", err)
	}
	return len(docs), 0, nil
}

func (s *Store) spool(docs []store.Doc) error {
	seg := segment{Docs: make([]wireDoc, len(docs))}
	for i, d := range docs {
		seg.Docs[i] = wireDoc{EventID: d.EventID, Kind: d.Kind, Dataset: d.Dataset, HostID: d.HostID, RuleID: d.RuleID,
			Ruleset: d.Ruleset, Origin: d.Origin, Timestamp: d.Timestamp, Ingested: d.Ingested, Severity: d.Severity,
			Sequence: d.Sequence, JSON: d.JSON}
	}
	b, err := json.Marshal(seg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("store spool closed")
	}
	if s.bytes+int64(len(b)) > s.o.MaxBytes {
		return fmt.Errorf("store spool full (%d of %d bytes)", s.bytes, s.o.MaxBytes)
	}
	n := s.next
	if err := atomicfile.Write(s.path(n), b, 0o600); err != nil {
		return err
	}
	s.next++
	s.bytes += int64(len(b))
	s.depth++
	s.seqMu.Lock()
	for _, d := range docs {
		if d.Sequence > 0 && d.Origin == store.OriginSensor {
			if s.spooledSeqs[d.HostID] == nil {
				s.spooledSeqs[d.HostID] = map[int64]bool{}
			}
			s.spooledSeqs[d.HostID][d.Sequence] = true
		}
	}
	s.seqMu.Unlock()
	s.spooledDocs.Add(float64(len(docs)))
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// drain replays segments oldest first, backing off while the backend is
// still down.
func (s *Store) drain() {
	defer close(s.done)
	backoff := time.Second
	for {
		segs, err := s.segments()
		if err == nil && len(segs) > 0 {
			if err := s.replay(segs[0]); err != nil {
				s.o.Log.Debug("store still unavailable; spool kept", logkey.Error, err)
				select {
				case <-s.stop:
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 30*time.Second)
				continue
			}
			backoff = time.Second
			if len(segs) == 1 {
				s.o.Log.Info("store spool drained")
			}
			continue
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-time.After(5 * time.Second):
		}
	}
}

func (s *Store) replay(n int64) error {
	b, err := os.ReadFile(s.path(n))
	if err != nil {
		return err
	}
	var seg segment
	if err := json.Unmarshal(b, &seg); err != nil {
		// A torn segment cannot be: it was renamed into place after fsync.
		// Keep it aside for inspection rather than block the spool.
		bad := s.path(n) + ".corrupt"
		os.Rename(s.path(n), bad)
		s.o.Log.Error("store spool segment unreadable; moved aside", logkey.Path, bad, logkey.Error, err)
		s.forget(int64(len(b)))
		return nil
	}
	docs := make([]store.Doc, len(seg.Docs))
	for i, d := range seg.Docs {
		docs[i] = store.Doc{EventID: d.EventID, Kind: d.Kind, Dataset: d.Dataset, HostID: d.HostID, RuleID: d.RuleID,
			Ruleset: d.Ruleset, Origin: d.Origin, Timestamp: d.Timestamp, Ingested: d.Ingested, Severity: d.Severity,
			Sequence: d.Sequence, JSON: d.JSON}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := s.Backend.Ingest(ctx, docs); err != nil {
		return err
	}
	s.trackReplayed(ctx, docs)
	if err := os.Remove(s.path(n)); err != nil {
		return err
	}
	s.replayed.Add(float64(len(docs)))
	s.forget(int64(len(b)))
	return nil
}

// TrackSequences tracks a live batch, but not while batches wait in the
// spool: those are tracked when they are replayed, in the order they came,
// so an outage does not look like lost events.
func (s *Store) TrackSequences(ctx context.Context, hostID string, seqs []int64) ([]store.SequenceGap, error) {
	s.seqMu.Lock()
	waiting := s.spooledSeqs[hostID]
	live := seqs[:0:0]
	for _, q := range seqs {
		if !waiting[q] {
			live = append(live, q)
		}
	}
	s.seqMu.Unlock()
	if len(live) == 0 {
		return nil, nil
	}
	return s.track(ctx, hostID, live)
}

// track tracks seqs after any numbers of the host whose tracking failed
// earlier (the backend went away between storing a batch and tracking it):
// they are kept and go first, so an outage never reads as a gap.
func (s *Store) track(ctx context.Context, hostID string, seqs []int64) ([]store.SequenceGap, error) {
	s.seqMu.Lock()
	all := append(s.pendingSeqs[hostID], seqs...)
	delete(s.pendingSeqs, hostID)
	s.seqMu.Unlock()
	gaps, err := s.Backend.TrackSequences(ctx, hostID, all)
	if err != nil {
		s.seqMu.Lock()
		if len(s.pendingSeqs) < maxAuthCache {
			s.pendingSeqs[hostID] = append(all, s.pendingSeqs[hostID]...)
		}
		s.seqMu.Unlock()
		return nil, nil
	}
	return gaps, nil
}

// trackReplayed tracks the sequences of a replayed batch and raises the
// events-lost alert for any gap, as the server does for live batches.
func (s *Store) trackReplayed(ctx context.Context, docs []store.Doc) {
	var order []string
	byHost := map[string][]int64{}
	for _, d := range docs {
		if d.Origin != store.OriginSensor || d.Sequence <= 0 {
			continue
		}
		if _, ok := byHost[d.HostID]; !ok {
			order = append(order, d.HostID)
		}
		byHost[d.HostID] = append(byHost[d.HostID], d.Sequence)
	}
	var alerts []event.Event
	var hosts []api.Host
	for _, h := range order {
		gaps, _ := s.track(ctx, h, byHost[h])
		s.seqMu.Lock()
		for _, q := range byHost[h] {
			delete(s.spooledSeqs[h], q)
		}
		if len(s.spooledSeqs[h]) == 0 {
			delete(s.spooledSeqs, h)
		}
		s.seqMu.Unlock()
		if len(gaps) == 0 {
			continue
		}
		if hosts == nil {
			hosts, _ = s.Backend.Hosts(ctx)
		}
		host := api.Host{HostID: h}
		for _, hh := range hosts {
			if hh.HostID == h {
				host = hh
			}
		}
		for _, g := range gaps {
			alerts = append(alerts, watchdog.EventsLost(host, g, time.Now()))
		}
	}
	if len(alerts) > 0 {
		if _, err := watchdog.Raise(ctx, s.Backend, alerts, time.Now()); err != nil {
			s.o.Log.Error("raising events-lost alerts for a replayed batch", logkey.Error, err)
		}
	}
}

func (s *Store) forget(size int64) {
	s.mu.Lock()
	s.bytes -= size
	s.depth--
	s.mu.Unlock()
}

// Depth is the number of spooled batches waiting.
func (s *Store) Depth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.depth
}

// Close stops the replay (what is spooled stays for the next start) and
// closes the backend.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	return s.Backend.Close()
}
