package elasticsearch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/storetest"
)

// gatedBulk holds the store's _bulk requests until opened, as a node too
// busy to answer within a batch's deadline would, and counts the items
// they carry.
type gatedBulk struct {
	rt    http.RoundTripper
	open  chan struct{}
	once  sync.Once
	items atomic.Int64
}

func newGatedBulk() *gatedBulk {
	return &gatedBulk{rt: http.DefaultTransport, open: make(chan struct{})}
}

func (g *gatedBulk) release() { g.once.Do(func() { close(g.open) }) }

func (g *gatedBulk) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/_bulk") && r.Body != nil {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		g.items.Add(int64(bytes.Count(b, []byte(`{"create":`))))
		r.Body = io.NopCloser(bytes.NewReader(b))
		select {
		case <-g.open:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return g.rt.RoundTrip(r)
}

func alertBatch(prefix string, n int) []store.Doc {
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	docs := make([]store.Doc, n)
	for i := range docs {
		docs[i] = storetest.Alert(fmt.Sprintf("%s-%03d", prefix, i), "h1", "r1", ts)
	}
	return docs
}

// ingestTimingOut hands docs over with a deadline the gated node cannot
// meet, as the collector's 5 s does for a slow node, and checks it failed.
func ingestTimingOut(t *testing.T, s *Store, docs []store.Doc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := s.Ingest(ctx, docs); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ingest on a node that does not answer = %v, want the deadline", err)
	}
}

// TestResentBatchWaitsForItsFirstAttempt: a batch that outlived its
// deadline is resent while its items still wait for the node; the resend
// waits for them instead of sending them again, and reports them created,
// once: no duplicate, no item sent twice.
func TestResentBatchWaitsForItsFirstAttempt(t *testing.T) {
	t.Parallel()
	g := newGatedBulk()
	reg := prometheus.NewRegistry()
	s := OpenTest(t, Options{Transport: g, Registry: reg, FlushInterval: 10 * time.Millisecond})
	docs := alertBatch("resend", 40)
	ingestTimingOut(t, s, docs)

	type answer struct {
		acc, dup int
		err      error
	}
	done := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		acc, dup, err := s.Ingest(ctx, docs)
		done <- answer{acc, dup, err}
	}()
	// The resend joins the items in flight (no new bulk item), then the
	// node answers.
	deadline := time.Now().Add(30 * time.Second)
	for testutil.ToFloat64(s.m.items.WithLabelValues("rejoined")) < float64(len(docs)) {
		if time.Now().After(deadline) {
			t.Fatalf("the resend joined %v of %d items in flight", testutil.ToFloat64(s.m.items.WithLabelValues("rejoined")), len(docs))
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.release()
	a := <-done
	if a.err != nil || a.acc != len(docs) || a.dup != 0 {
		t.Fatalf("resend = %d accepted, %d duplicates, %v; want %d, 0, nil", a.acc, a.dup, a.err, len(docs))
	}
	if n := g.items.Load(); n != int64(len(docs)) {
		t.Errorf("the node was sent %d items for %d documents", n, len(docs))
	}
	if n := testutil.ToFloat64(s.m.items.WithLabelValues("duplicate")); n != 0 {
		t.Errorf("duplicates counted: %v", n)
	}
	if s.flights.inFlight() != 0 {
		t.Errorf("%d flights kept after their answers were taken", s.flights.inFlight())
	}
	// A later replay (the sensor did not hear the answer) is the node's 409.
	acc, dup, err := s.Ingest(context.Background(), docs)
	if err != nil || acc != 0 || dup != len(docs) {
		t.Errorf("replay = %d %d %v, want 0 %d nil", acc, dup, err, len(docs))
	}
}

// TestResendAfterTheNodeAnswered: the node answered after the first
// caller gave up; the resend takes those answers without sending again.
func TestResendAfterTheNodeAnswered(t *testing.T) {
	t.Parallel()
	g := newGatedBulk()
	s := OpenTest(t, Options{Transport: g, FlushInterval: 10 * time.Millisecond})
	docs := alertBatch("answered", 30)
	ingestTimingOut(t, s, docs)
	g.release()
	deadline := time.Now().Add(30 * time.Second)
	for s.flightsDone() < len(docs) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items answered by the node", s.flightsDone(), len(docs))
		}
		time.Sleep(5 * time.Millisecond)
	}
	acc, dup, err := s.Ingest(context.Background(), docs)
	if err != nil || acc != len(docs) || dup != 0 {
		t.Fatalf("resend = %d %d %v, want %d 0 nil", acc, dup, err, len(docs))
	}
	if n := g.items.Load(); n != int64(len(docs)) {
		t.Errorf("the node was sent %d items for %d documents", n, len(docs))
	}
}

// TestSameIDTwiceInOneBatch keeps the node's answer for an id repeated in
// one batch: one created, one duplicate.
func TestSameIDTwiceInOneBatch(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	d := alertBatch("twice", 1)[0]
	acc, dup, err := s.Ingest(context.Background(), []store.Doc{d, d})
	if err != nil || acc != 1 || dup != 1 {
		t.Fatalf("Ingest = %d %d %v, want 1 1 nil", acc, dup, err)
	}
}

// flightsDone counts the flights the node has answered.
func (s *Store) flightsDone() int {
	s.flights.mu.Lock()
	defer s.flights.mu.Unlock()
	n := 0
	for _, f := range s.flights.m {
		select {
		case <-f.done:
			n++
		default:
		}
	}
	return n
}
