// Package shipper sends the sensor's events to the collector: a pipeline
// sink that appends every event to a Queue, and a loop that sends batches
// (NDJSON, gzip, over the pinned TLS connection) and removes only what the
// collector confirmed. A dead collector costs latency, never events (up to
// the queue's bound, and with the durable spool not even a restart).
package shipper

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Sender delivers one NDJSON batch to the collector. *client.Client
// implements it.
type Sender interface {
	SendEvents(ctx context.Context, ndjson []byte) (api.IngestResponse, error)
}

// Options configure a Shipper.
type Options struct {
	Queue  Queue
	Sender Sender
	// Permanent tells errors not worth retrying soon (a refused
	// credential) from transient ones; nil treats all as transient.
	Permanent     func(error) bool
	BatchEvents   int           // default 500
	BatchBytes    int           // default 1 MiB
	FlushInterval time.Duration // longest an event waits for company, default 1s
	MaxBackoff    time.Duration // default 30s
	// DrainTimeout bounds the final flush at shutdown (default 5s).
	DrainTimeout time.Duration
	Health       event.HealthFunc
	Log          *slog.Logger
	Registerer   prometheus.Registerer
}

// Shipper implements pipeline.Sink; Run sends.
type Shipper struct {
	o       Options
	log     *slog.Logger
	closed  chan struct{}
	once    sync.Once
	sent    prometheus.Counter
	dups    prometheus.Counter
	reject  prometheus.Counter
	fails   prometheus.Counter
	dropped *prometheus.CounterVec
	queued  prometheus.GaugeFunc
}

const component = "shipper"

// New returns a shipper; call Run to start sending.
func New(o Options) *Shipper {
	if o.BatchEvents <= 0 {
		o.BatchEvents = 500
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.Permanent == nil {
		o.Permanent = func(error) bool { return false }
	}
	if o.Health == nil {
		o.Health = event.NoHealth
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	s := &Shipper{
		o: o, log: o.Log.With(logkey.Component, component), closed: make(chan struct{}),
		sent:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_shipper_events_sent_total", Help: "Events the collector confirmed as newly stored."}),
		dups:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_shipper_events_duplicate_total", Help: "Events the collector already had (a retry after a lost answer)."}),
		reject:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_shipper_events_rejected_total", Help: "Events the collector refused as malformed."}),
		fails:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_shipper_send_failures_total", Help: "Batches that failed to send and will be retried."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tillwatch_shipper_events_dropped_total", Help: "Events the queue could not take, per event.kind."}, []string{"kind"}),
	}
	s.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tillwatch_shipper_queue_events", Help: "Events waiting for the collector."}, func() float64 { return float64(o.Queue.Len()) })
	o.Registerer.MustRegister(s.sent, s.dups, s.reject, s.fails, s.dropped, s.queued)
	return s
}

// Name implements pipeline.Sink.
func (s *Shipper) Name() string { return "collector" }

// Write implements pipeline.Sink: the event gets its sequence number
// (event.sequence) and is queued — durably with the spool — not yet sent.
func (s *Shipper) Write(_ context.Context, ev *event.Event) error {
	_, err := s.o.Queue.Append(ev.Event.Kind, func(seq int64) ([]byte, error) {
		cp := *ev
		cp.Event.Sequence = seq
		return json.Marshal(&cp)
	})
	if err != nil {
		s.dropped.WithLabelValues(ev.Event.Kind).Inc()
		return fmt.Errorf("queue event %s: %w", ev.Event.ID, err)
	}
	return nil
}

// Close implements pipeline.Sink: no more writes; Run makes a last attempt
// to send what is queued (bounded by DrainTimeout) and returns.
func (s *Shipper) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// Run sends batches until Close (then drains, bounded) or ctx is cancelled
// without Close (then it returns at once). It returns nil.
func (s *Shipper) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	healthy := true
	timer := time.NewTimer(s.o.FlushInterval)
	defer timer.Stop()
	for {
		if s.o.Queue.Len() == 0 {
			select {
			case <-s.closed:
				return nil
			case <-ctx.Done():
				return nil
			case <-s.o.Queue.Ready():
			}
			// Wait briefly for company so a burst travels as one batch.
			if s.o.Queue.Len() < s.o.BatchEvents {
				timer.Reset(min(s.o.FlushInterval, 200*time.Millisecond))
				select {
				case <-timer.C:
				case <-s.closed:
				case <-ctx.Done():
					return nil
				}
			}
		}
		sendCtx := ctx
		var cancel context.CancelFunc = func() {}
		draining := isClosed(s.closed)
		if draining {
			sendCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.o.DrainTimeout)
		}
		err := s.sendOne(sendCtx)
		cancel()
		if err == nil {
			backoff = 0
			if !healthy {
				healthy = true
				s.o.Health(component, event.HealthOK, "collector reachable again")
			}
			continue
		}
		s.fails.Inc()
		if draining {
			s.log.Warn("shutdown with events still queued for the collector", logkey.Count, s.o.Queue.Len(), logkey.Error, err)
			return nil
		}
		backoff = nextBackoff(backoff, s.o.MaxBackoff)
		if s.o.Permanent(err) {
			backoff = s.o.MaxBackoff
		}
		if healthy {
			healthy = false
			s.o.Health(component, event.HealthDegraded, fmt.Sprintf("cannot deliver to the collector, events kept queued and retried: %v", err))
		}
		s.log.Warn("send failed; will retry", logkey.Error, err, logkey.Duration, backoff, logkey.Count, s.o.Queue.Len())
		timer.Reset(backoff)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil
		case <-s.closed:
			// Closing cuts the backoff short for one last attempt.
		}
	}
}

// sendOne sends the head batch and acknowledges it when confirmed.
func (s *Shipper) sendOne(ctx context.Context) error {
	b, err := s.o.Queue.Peek(s.o.BatchEvents, s.o.BatchBytes)
	if err != nil {
		return err
	}
	if len(b.Lines) == 0 {
		return nil
	}
	body := bytes.Join(b.Lines, []byte{'\n'})
	body = append(body, '\n')
	resp, err := s.o.Sender.SendEvents(ctx, body)
	if err != nil {
		return err
	}
	if n := resp.Accepted + resp.Duplicates + len(resp.Rejected); n != len(b.Lines) {
		// The collector answered for a different number of events than we
		// sent: keep the batch and retry rather than guess which were stored.
		return fmt.Errorf("collector confirmed %d of %d events", n, len(b.Lines))
	}
	for _, r := range resp.Rejected {
		s.log.Error("collector rejected an event; it cannot be stored", "line", r.Line, logkey.EventID, r.EventID, logkey.Error, r.Error)
	}
	if len(resp.Rejected) > 0 {
		s.o.Health(component, event.HealthDegraded, fmt.Sprintf("collector rejected %d malformed events (first: %s)", len(resp.Rejected), resp.Rejected[0].Error))
	}
	s.sent.Add(float64(resp.Accepted))
	s.dups.Add(float64(resp.Duplicates))
	s.reject.Add(float64(len(resp.Rejected)))
	return s.o.Queue.Ack(b)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// nextBackoff doubles with full jitter so a fleet reconnecting after a
// collector restart spreads out instead of arriving in the same second.
func nextBackoff(prev, maxB time.Duration) time.Duration {
	base := max(prev*2, 500*time.Millisecond)
	base = min(base, maxB)
	return base/2 + rand.N(base/2+1)
}
