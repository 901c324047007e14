package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Stamp is what the pipeline writes onto every event leaving it.
type Stamp struct {
	Host  event.Host
	Agent event.Agent
	Mode  string
	// Labels are the sensor's labels (store, region), copied to every event.
	Labels map[string]string
}

// Options configure a Pipeline. Zero values take the defaults noted.
type Options struct {
	Stamp Stamp
	Log   *slog.Logger
	// Registerer receives the pipeline's metrics (required; tests pass a
	// fresh prometheus.NewRegistry so they can run in parallel).
	Registerer prometheus.Registerer
	// BusSize bounds the queue between sources and detectors (default 8192)
	// and each detector's own queue (a quarter of it).
	BusSize int
	// SinkQueue bounds each sink's queue (default 4096).
	SinkQueue int
	// ForwardTelemetry sends process and file telemetry to the sinks that
	// accept it, not only alerts and health.
	ForwardTelemetry bool
	// RestartBackoff is the first wait before a failed source is restarted
	// (default 1s, doubling to 1 minute).
	RestartBackoff time.Duration
	Now            func() time.Time
}

// Pipeline wires sources, detectors, enrichers, a responder and sinks.
// Build it with New and Add*, then call Run once.
type Pipeline struct {
	opts      Options
	log       *slog.Logger
	health    *Health
	sources   []Source
	detectors []Detector
	enrichers []Enricher
	responder Responder
	sinks     []sinkEntry
	journal   Sink
	names     map[string]bool

	// Queues hold pointers: a queue's memory follows its backlog. A
	// channel of 8,192 event.Event values took 5 MB at start (12 MB with
	// the detector queues), a third of an idle sensor's heap.
	bus    chan *event.Event
	alerts chan *Detection

	// emitMu guards Emit against the bus and alert channels closing.
	emitMu     sync.RWMutex
	emitClosed bool

	// sinkMu guards sink queues against a late health report after shutdown.
	sinkMu      sync.RWMutex
	sinksClosed bool

	stageTotal *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	alertTotal *prometheus.CounterVec
}

type sinkEntry struct {
	sink  Sink
	kinds []string
	queue chan *event.Event
}

// New returns an empty pipeline.
func New(opts Options) *Pipeline {
	if opts.BusSize <= 0 {
		opts.BusSize = 8192
	}
	if opts.SinkQueue <= 0 {
		opts.SinkQueue = 4096
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	p := &Pipeline{
		opts:   opts,
		log:    opts.Log.With(logkey.Component, "pipeline"),
		names:  map[string]bool{},
		bus:    make(chan *event.Event, opts.BusSize),
		alerts: make(chan *Detection, 1024),
		stageTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_stage_events_total",
			Help: "Events handled per pipeline stage and result (ok, error, panic).",
		}, []string{"stage", "name", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_events_dropped_total",
			Help: "Events dropped because a queue was full, per queue.",
		}, []string{"queue"}),
		alertTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_alerts_total",
			Help: "Alerts raised, per rule and response result.",
		}, []string{"rule_id", "response"}),
	}
	opts.Registerer.MustRegister(p.stageTotal, p.dropped, p.alertTotal)
	p.health = newHealth(opts.Log, opts.Registerer, opts.Now)
	return p
}

// Health is the pipeline's health tracker; sources and sinks report into it.
func (p *Pipeline) Health() *Health { return p.health }

func (p *Pipeline) register(kind, name string) {
	key := kind + "/" + name
	if p.names[key] {
		// Wiring is code, not input: a duplicate is a programming error.
		panic(fmt.Sprintf("pipeline: %s %q registered twice", kind, name))
	}
	p.names[key] = true
}

// AddSource adds a source. Names must be unique.
func (p *Pipeline) AddSource(s Source) {
	p.register("source", s.Name())
	p.sources = append(p.sources, s)
}

// AddDetector adds a detector. Names must be unique.
func (p *Pipeline) AddDetector(d Detector) {
	p.register("detector", d.Name())
	p.detectors = append(p.detectors, d)
}

// AddEnricher adds an alert enricher; enrichers run in the order added.
func (p *Pipeline) AddEnricher(e Enricher) { p.enrichers = append(p.enrichers, e) }

// SetResponder sets the responder (none: alerts are only reported).
func (p *Pipeline) SetResponder(r Responder) { p.responder = r }

// SetJournal sets the sink that must hold every alert and health event
// before anything else sees it: its Write runs synchronously in the
// delivering goroutine, ahead of every other sink, so an alert is durable
// (the spool) before it is reported anywhere. Telemetry reaches it through
// an ordinary sink queue. It must be safe for concurrent use.
func (p *Pipeline) SetJournal(j Sink) {
	p.register("sink", j.Name())
	p.journal = j
	p.sinks = append(p.sinks, sinkEntry{sink: j, kinds: []string{event.KindEvent}, queue: make(chan *event.Event, p.opts.SinkQueue)})
}

// AddSink adds a sink that receives events of the given kinds (event.kind
// values); telemetry ("event") reaches it only with ForwardTelemetry.
func (p *Pipeline) AddSink(s Sink, kinds ...string) {
	p.register("sink", s.Name())
	p.sinks = append(p.sinks, sinkEntry{sink: s, kinds: kinds, queue: make(chan *event.Event, p.opts.SinkQueue)})
}

// Emit injects an event from a component that is not a source (the
// kill-switch receiver, the rule-bundle syncer). Telemetry and health take
// the bus as a source's would and never block; an alert goes straight onto
// the alert path (stamp, enrichment, journal, sinks) without a response,
// waiting for room rather than being dropped. Safe for concurrent use, also
// while the pipeline shuts down: after that, events are counted as dropped.
func (p *Pipeline) Emit(ev event.Event) {
	p.emitMu.RLock()
	defer p.emitMu.RUnlock()
	if p.emitClosed {
		p.dropped.WithLabelValues("after-shutdown").Inc()
		return
	}
	if ev.Event.Kind == event.KindAlert {
		p.alerts <- &Detection{Alert: ev}
		return
	}
	p.emit("bus", ev)
}

func (p *Pipeline) emit(from string, ev event.Event) {
	select {
	case p.bus <- &ev:
	default:
		p.dropped.WithLabelValues("bus").Inc()
		p.health.Report("pipeline", event.HealthDegraded, "event queue full: sources produce faster than detectors consume; events dropped (see tillwatch_events_dropped_total)")
	}
}

// Run starts every stage and blocks until ctx is cancelled, then drains:
// sources stop, queued events pass detectors, alerts reach the sinks, sinks
// are closed. It returns nil after a clean shutdown.
func (p *Pipeline) Run(ctx context.Context) error {
	if len(p.sources) == 0 {
		return errors.New("pipeline: no sources")
	}
	p.health.setOut(func(ev event.Event) { p.deliver(p.stamp(ev)) })

	// Sinks first, so nothing emitted at start-up is lost.
	var sinkWG sync.WaitGroup
	for i := range p.sinks {
		sinkWG.Add(1)
		go func(se *sinkEntry) { defer sinkWG.Done(); p.runSink(se) }(&p.sinks[i])
	}

	// Detectors each read their own queue fed by the dispatcher.
	detQueues := make([]chan *event.Event, len(p.detectors))
	var detWG sync.WaitGroup
	for i, d := range p.detectors {
		detQueues[i] = make(chan *event.Event, max(p.opts.BusSize/4, 16))
		detWG.Add(1)
		go func() { defer detWG.Done(); p.runDetector(d, detQueues[i]) }()
	}

	alertDone := make(chan struct{})
	go func() { defer close(alertDone); p.runAlerts(ctx) }()

	dispatchDone := make(chan struct{})
	go func() { defer close(dispatchDone); p.dispatch(detQueues) }()

	var srcWG sync.WaitGroup
	for _, s := range p.sources {
		srcWG.Add(1)
		go func() { defer srcWG.Done(); p.runSource(ctx, s) }()
	}

	<-ctx.Done()
	p.log.Info("shutting down: draining queues")
	srcWG.Wait()
	p.emitMu.Lock()
	p.emitClosed = true
	p.emitMu.Unlock()
	close(p.bus)
	<-dispatchDone
	for _, q := range detQueues {
		close(q)
	}
	detWG.Wait()
	close(p.alerts)
	<-alertDone
	p.health.setOut(nil)
	p.sinkMu.Lock()
	p.sinksClosed = true
	for i := range p.sinks {
		close(p.sinks[i].queue)
	}
	p.sinkMu.Unlock()
	sinkWG.Wait()
	return nil
}

// dispatch fans every event out to each detector and forwards telemetry.
// Every queue gets the same pointer; nothing writes the event after Emit,
// and each detector works on its own copy (runDetector).
func (p *Pipeline) dispatch(queues []chan *event.Event) {
	for ev := range p.bus {
		for i, q := range queues {
			select {
			case q <- ev:
			default:
				name := p.detectors[i].Name()
				p.dropped.WithLabelValues("detector/" + name).Inc()
				p.health.Report("detector/"+name, event.HealthDegraded, "detector queue full: detector too slow for the event rate; events skipped")
			}
		}
		if ev.Event.Kind != event.KindAlert {
			// Health events and telemetry go straight to sinks.
			p.deliver(p.stamp(*ev))
		}
	}
}

func (p *Pipeline) runSource(ctx context.Context, s Source) {
	comp := "source/" + s.Name()
	emit := func(ev event.Event) { p.emit(comp, ev) }
	backoff := p.opts.RestartBackoff
	for {
		start := p.opts.Now()
		err := p.safeRun(comp, func() error { return s.Run(ctx, emit) })
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned without error before shutdown")
		}
		p.stageTotal.WithLabelValues("source", s.Name(), "error").Inc()
		p.health.Report(comp, event.HealthFailed, fmt.Sprintf("%v; restarting in %s", err, backoff))
		if p.opts.Now().Sub(start) > time.Minute {
			backoff = p.opts.RestartBackoff // it ran a while: not a crash loop
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
		p.health.Report(comp, event.HealthOK, "restarted")
	}
}

// safeRun runs f, turning a panic into an error with its stack logged.
func (p *Pipeline) safeRun(comp string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("stage panicked", logkey.Stage, comp, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

func (p *Pipeline) runDetector(d Detector, in <-chan *event.Event) {
	comp := "detector/" + d.Name()
	ok := p.stageTotal.WithLabelValues("detector", d.Name(), "ok")
	panicked := p.stageTotal.WithLabelValues("detector", d.Name(), "panic")
	for shared := range in {
		ev := *shared // a detector may change its event; the others must not see it
		var out []Detection
		err := p.safeRun(comp, func() error { out = d.Detect(&ev); return nil })
		if err != nil {
			panicked.Inc()
			p.health.Report(comp, event.HealthDegraded, "detector panicked on an event: "+err.Error())
			continue
		}
		ok.Inc()
		for _, det := range out {
			// Alerts block rather than drop: back-pressure is better than a lost alert.
			p.alerts <- &det
		}
	}
}

// runAlerts enriches, responds to and delivers every detection in order.
func (p *Pipeline) runAlerts(ctx context.Context) {
	for det := range p.alerts {
		det.Alert = p.stamp(det.Alert)
		for _, e := range p.enrichers {
			if err := p.safeRun("enricher", func() error { e.Enrich(&det.Alert); return nil }); err != nil {
				p.health.Report("enricher", event.HealthDegraded, err.Error())
			}
		}
		if p.responder != nil {
			// Responses must run even while shutting down: a detection that
			// arrived must be acted on. The action itself is bounded.
			if err := p.safeRun("responder", func() error { p.responder.Respond(context.WithoutCancel(ctx), det); return nil }); err != nil {
				p.health.Report("responder", event.HealthFailed, err.Error())
			}
		}
		result := "none"
		if tw := det.Alert.Tillwatch; tw != nil && tw.Response != nil {
			result = tw.Response.Action + ":" + tw.Response.Result
			if len(result) > 64 {
				result = tw.Response.Action + ":error"
			}
		}
		ruleID := ""
		if det.Alert.Rule != nil {
			ruleID = det.Alert.Rule.ID
		}
		p.alertTotal.WithLabelValues(ruleID, result).Inc()
		p.log.Warn("alert", logkey.RuleID, ruleID, logkey.EventID, det.Alert.Event.ID, "message", det.Alert.Message, "response", result)
		p.deliver(det.Alert)
	}
}

// stamp fills what every outgoing event carries.
func (p *Pipeline) stamp(ev event.Event) event.Event {
	st := p.opts.Stamp
	if ev.Timestamp.IsZero() {
		ev.Timestamp = p.opts.Now()
	}
	if ev.Event.ID == "" {
		ev.Event.ID = event.NewID()
	}
	ev.ECS.Version = event.ECSVersion
	ev.Host = st.Host
	ev.Agent = st.Agent
	if len(st.Labels) > 0 && ev.Labels == nil {
		ev.Labels = st.Labels
	}
	if ev.Event.Kind == event.KindAlert {
		if ev.Event.Dataset == "" {
			ev.Event.Dataset = event.DatasetAlerts
		}
		if st.Mode != "" {
			if ev.Tillwatch == nil {
				ev.Tillwatch = &event.Tillwatch{}
			}
			ev.Tillwatch.Mode = st.Mode
		}
	}
	return ev
}

// deliver queues ev on every sink that takes its kind. Alerts and health
// block on a full sink queue (never dropped here); telemetry is dropped and
// counted.
func (p *Pipeline) deliver(ev event.Event) {
	if ev.Event.Kind == event.KindEvent && !p.opts.ForwardTelemetry {
		return
	}
	p.sinkMu.RLock()
	defer p.sinkMu.RUnlock()
	if p.sinksClosed {
		p.log.Warn("event after shutdown not delivered", logkey.EventID, ev.Event.ID, "message", ev.Message)
		return
	}
	if p.journal != nil && ev.Event.Kind != event.KindEvent {
		p.writeJournal(&ev)
	}
	for i := range p.sinks {
		se := &p.sinks[i]
		if !slices.Contains(se.kinds, ev.Event.Kind) {
			continue
		}
		cp := ev
		if ev.Event.Kind == event.KindEvent {
			select {
			case se.queue <- &cp:
			default:
				p.dropped.WithLabelValues("sink/" + se.sink.Name()).Inc()
			}
			continue
		}
		se.queue <- &cp
	}
}

// writeJournal writes ev to the journal synchronously. A failure is
// counted and reported; the event still goes to the other sinks.
func (p *Pipeline) writeJournal(ev *event.Event) {
	name := p.journal.Name()
	err := p.safeRun("sink/"+name, func() error { return p.journal.Write(context.Background(), ev) })
	if err != nil {
		p.stageTotal.WithLabelValues("sink", name, "error").Inc()
		p.log.Error("journal write failed", logkey.Stage, "sink/"+name, logkey.EventID, ev.Event.ID, logkey.Error, err)
		// Asynchronous: the report itself is delivered through the journal.
		go p.health.Report("sink/"+name, event.HealthFailed, "could not keep an event durably: "+err.Error())
		return
	}
	p.stageTotal.WithLabelValues("sink", name, "ok").Inc()
}

func (p *Pipeline) runSink(se *sinkEntry) {
	name := se.sink.Name()
	comp := "sink/" + name
	ok := p.stageTotal.WithLabelValues("sink", name, "ok")
	failed := p.stageTotal.WithLabelValues("sink", name, "error")
	healthy := true
	ctx := context.Background()
	for ev := range se.queue {
		err := p.safeRun(comp, func() error { return se.sink.Write(ctx, ev) })
		if err != nil {
			failed.Inc()
			p.log.Error("sink write failed", logkey.Stage, comp, logkey.EventID, ev.Event.ID, logkey.Error, err)
			if healthy {
				healthy = false
				// Reported asynchronously: Report may deliver to this very sink.
				go p.health.Report(comp, event.HealthDegraded, "write failed: "+err.Error())
			}
			continue
		}
		ok.Inc()
		if !healthy {
			healthy = true
			go p.health.Report(comp, event.HealthOK, "writes succeed again")
		}
	}
	if err := se.sink.Close(); err != nil {
		p.log.Error("sink close failed", logkey.Stage, comp, logkey.Error, err)
	}
}
