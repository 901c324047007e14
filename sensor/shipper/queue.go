package shipper

import (
	"errors"
	"sync"

	"github.com/tillwatch/tillwatch/internal/event"
)

// Queue holds encoded events between the pipeline and the collector. The
// shipper appends every event, reads batches from the head and removes them
// only once the collector has confirmed them.
//
// The durable on-disk spool (sensor/spool) is the sensor's queue; MemQueue
// is the in-memory one for tests and tools. Implementations are safe for
// concurrent appends and one reader.
type Queue interface {
	// Append stores one event of the given event.kind. It assigns the
	// event's sequence number — one more than the previous append's, never
	// reused, so the collector can tell a gap — and calls encode with it to
	// get the NDJSON line (without newline). It returns the sequence once
	// the event is stored as durably as the queue promises, or an error
	// (ErrFull when the bound forbids it); a failed append uses up no
	// sequence number.
	Append(kind string, encode func(seq int64) ([]byte, error)) (int64, error)
	// Peek returns up to maxEvents events (and at most maxBytes, but always
	// at least one) from the head, without removing them.
	Peek(maxEvents, maxBytes int) (Batch, error)
	// Ack removes a batch returned by Peek.
	Ack(b Batch) error
	// Len is the number of events waiting.
	Len() int
	// Ready is signalled (non-blocking, coalesced) when events are appended.
	Ready() <-chan struct{}
	// Close releases the queue.
	Close() error
}

// Batch is a run of events from a queue's head.
type Batch struct {
	Lines [][]byte
	// Token lets the queue recognise the batch on Ack; opaque to callers.
	Token uint64
}

// ErrFull is returned by Append when the queue is at its bound and nothing
// can be made room for.
var ErrFull = errors.New("shipper queue full")

// MemQueue is a bounded in-memory Queue: events survive a dead collector but
// not a sensor restart. When full it drops telemetry before alerts: an
// incoming alert evicts a queued telemetry event; an incoming telemetry
// event is refused.
type MemQueue struct {
	mu    sync.Mutex
	items []item
	max   int
	next  uint64 // sequence of items[0]
	// inflight is how many head items the last Peek handed out; eviction
	// never touches them, so Ack can remove exactly those.
	inflight int
	seq      int64
	dropped  map[string]uint64
	ready    chan struct{}
}

type item struct {
	line []byte
	kind string
}

// NewMemQueue returns a queue holding at most max events.
func NewMemQueue(max int) *MemQueue {
	return &MemQueue{max: max, ready: make(chan struct{}, 1), dropped: map[string]uint64{}}
}

// Append implements Queue.
func (q *MemQueue) Append(kind string, encode func(seq int64) ([]byte, error)) (int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.max {
		if kind == event.KindEvent || !q.evictTelemetryLocked() {
			q.dropped[kind]++
			return 0, ErrFull
		}
	}
	line, err := encode(q.seq + 1)
	if err != nil {
		return 0, err
	}
	q.seq++
	q.items = append(q.items, item{line: line, kind: kind})
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return q.seq, nil
}

// evictTelemetryLocked removes the newest telemetry event that is not in
// flight; it reports whether it found one.
func (q *MemQueue) evictTelemetryLocked() bool {
	for i := len(q.items) - 1; i >= q.inflight; i-- {
		if q.items[i].kind == event.KindEvent {
			q.items = append(q.items[:i], q.items[i+1:]...)
			q.dropped[event.KindEvent]++
			return true
		}
	}
	return false
}

// Peek implements Queue.
func (q *MemQueue) Peek(maxEvents, maxBytes int) (Batch, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := Batch{Token: q.next}
	size := 0
	for _, it := range q.items {
		if len(b.Lines) >= maxEvents || (len(b.Lines) > 0 && size+len(it.line)+1 > maxBytes) {
			break
		}
		b.Lines = append(b.Lines, it.line)
		size += len(it.line) + 1
	}
	q.inflight = len(b.Lines)
	return b, nil
}

// Ack implements Queue. Only the batch of the last Peek can be acknowledged;
// eviction never touches it, so its lines are still the first ones.
func (q *MemQueue) Ack(b Batch) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if b.Token != q.next || len(b.Lines) > len(q.items) {
		return errors.New("shipper queue: ack of a batch that is not at the head")
	}
	q.items = q.items[len(b.Lines):]
	q.next++
	q.inflight = 0
	return nil
}

// Len implements Queue.
func (q *MemQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Dropped reports events refused or evicted, per event.kind.
func (q *MemQueue) Dropped() map[string]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]uint64, len(q.dropped))
	for k, v := range q.dropped {
		out[k] = v
	}
	return out
}

// Ready implements Queue.
func (q *MemQueue) Ready() <-chan struct{} { return q.ready }

// Close implements Queue.
func (q *MemQueue) Close() error { return nil }
