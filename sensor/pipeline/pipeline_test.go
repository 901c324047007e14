package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tillwatch/tillwatch/internal/event"
)

// listSource emits a fixed list of events, then waits for cancellation.
type listSource struct {
	name   string
	events []event.Event
	panics bool
	runs   atomic.Int32
}

func (s *listSource) Name() string { return s.name }
func (s *listSource) Run(ctx context.Context, emit func(event.Event)) error {
	if s.runs.Add(1) == 1 && s.panics {
		panic("source exploded")
	}
	for _, ev := range s.events {
		emit(ev)
	}
	<-ctx.Done()
	return nil
}

// matchDetector raises an alert for every exec whose process name is "bad";
// a process named "boom" makes it panic.
type matchDetector struct{}

func (matchDetector) Name() string { return "match" }
func (matchDetector) Detect(ev *event.Event) []Detection {
	if ev.Process == nil {
		return nil
	}
	switch ev.Process.Name {
	case "boom":
		panic("detector exploded")
	case "bad":
		a := event.Event{
			Event:  event.Meta{Kind: event.KindAlert, Category: []string{"process"}, Type: []string{"start"}, Action: "t", Severity: 50, RiskScore: 50},
			Rule:   &event.Rule{ID: "T-1", Name: "test", Ruleset: event.RulesetSigma},
			Threat: &event.Threat{Framework: "MITRE ATT&CK"}, Process: ev.Process,
		}
		return []Detection{{Alert: a, Response: event.ActionKill, Target: &Target{PID: int(ev.Process.PID)}}}
	}
	return nil
}

// recordSink keeps what it receives.
type recordSink struct {
	name   string
	mu     sync.Mutex
	got    []event.Event
	closed bool
	fail   bool
}

func (s *recordSink) Name() string { return s.name }
func (s *recordSink) Write(_ context.Context, ev *event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("disk full")
	}
	s.got = append(s.got, *ev)
	return nil
}
func (s *recordSink) Close() error { s.mu.Lock(); s.closed = true; s.mu.Unlock(); return nil }
func (s *recordSink) events() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.got...)
}

type markResponder struct{}

func (markResponder) Respond(_ context.Context, d *Detection) {
	if d.Alert.Tillwatch == nil {
		d.Alert.Tillwatch = &event.Tillwatch{}
	}
	d.Alert.Tillwatch.Response = &event.Response{Action: d.Response, Result: event.ResultOK}
}

type hashEnricher struct{}

func (hashEnricher) Enrich(a *event.Event) { a.Process.Hash = &event.Hash{SHA256: "abc"} }

func proc(name string, pid int64) event.Event {
	return event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{PID: pid, Name: name}}
}

func newTestPipeline(reg *prometheus.Registry) *Pipeline {
	return New(Options{
		Stamp: Stamp{
			Host:  event.Host{ID: "h1", Name: "till-1"},
			Agent: event.Agent{ID: "a1", Type: event.AgentType, Version: "test"},
			Mode:  "enforce",
		},
		Registerer: reg, RestartBackoff: 10 * time.Millisecond,
	})
}

// runUntil runs p until cond holds (bounded), then shuts it down.
func runUntil(t *testing.T, p *Pipeline, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pipeline did not shut down within 5s")
	}
}

func TestAlertsFlowStampedEnrichedAndResponded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := newTestPipeline(reg)
	p.AddSource(&listSource{name: "s", events: []event.Event{proc("ok", 10), proc("bad", 11), proc("ok", 12)}})
	p.AddDetector(matchDetector{})
	p.AddEnricher(hashEnricher{})
	p.SetResponder(markResponder{})
	alerts := &recordSink{name: "alerts"}
	p.AddSink(alerts, event.KindAlert)

	runUntil(t, p, func() bool { return len(alerts.events()) == 1 })
	a := alerts.events()[0]
	if err := a.Validate(); err != nil {
		t.Errorf("alert leaving the pipeline lacks required fields: %v", err)
	}
	if a.Host.ID != "h1" || a.Agent.ID != "a1" || a.ECS.Version != event.ECSVersion || a.Event.ID == "" {
		t.Errorf("alert not stamped: %+v", a)
	}
	if a.Process.Hash == nil || a.Tillwatch.Response.Action != event.ActionKill || a.Tillwatch.Mode != "enforce" {
		t.Errorf("alert not enriched/responded: %+v", a.Tillwatch)
	}
	if !alerts.closed {
		t.Error("sink not closed at shutdown")
	}
	if got := testutil.ToFloat64(p.alertTotal.WithLabelValues("T-1", "kill:ok")); got != 1 {
		t.Errorf("tillwatch_alerts_total = %v, want 1", got)
	}
}

func TestTelemetryReachesSinksOnlyWhenForwarded(t *testing.T) {
	t.Parallel()
	for _, forward := range []bool{false, true} {
		reg := prometheus.NewRegistry()
		p := New(Options{Registerer: reg, ForwardTelemetry: forward})
		p.AddSource(&listSource{name: "s", events: []event.Event{proc("a", 1), proc("b", 2)}})
		all := &recordSink{name: "all"}
		p.AddSink(all, event.KindAlert, event.KindEvent, event.KindState)
		p.AddDetector(matchDetector{})
		runUntil(t, p, func() bool {
			return testutil.ToFloat64(p.stageTotal.WithLabelValues("detector", "match", "ok")) == 2
		})
		want := 0
		if forward {
			want = 2
		}
		if got := len(all.events()); got != want {
			t.Errorf("forward=%v: sink got %d telemetry events, want %d", forward, got, want)
		}
	}
}

func TestPanickingDetectorIsIsolatedAndReported(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := newTestPipeline(reg)
	p.AddSource(&listSource{name: "s", events: []event.Event{proc("boom", 1), proc("bad", 2)}})
	p.AddDetector(matchDetector{})
	sink := &recordSink{name: "rec"}
	p.AddSink(sink, event.KindAlert, event.KindState)

	runUntil(t, p, func() bool {
		var alert, health bool
		for _, ev := range sink.events() {
			alert = alert || ev.Event.Kind == event.KindAlert
			health = health || (ev.Event.Kind == event.KindState && ev.Tillwatch.Health.Component == "detector/match")
		}
		return alert && health
	})
	if got := testutil.ToFloat64(p.stageTotal.WithLabelValues("detector", "match", "panic")); got != 1 {
		t.Errorf("panic counter = %v, want 1", got)
	}
	if st := p.Health().States()["detector/match"]; st != event.HealthDegraded {
		t.Errorf("detector health = %q, want degraded", st)
	}
}

func TestPanickingSourceIsRestarted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := newTestPipeline(reg)
	src := &listSource{name: "flaky", panics: true, events: []event.Event{proc("bad", 7)}}
	p.AddSource(src)
	p.AddDetector(matchDetector{})
	sink := &recordSink{name: "rec"}
	p.AddSink(sink, event.KindAlert, event.KindState)
	runUntil(t, p, func() bool {
		for _, ev := range sink.events() {
			if ev.Event.Kind == event.KindAlert {
				return true
			}
		}
		return false
	})
	if src.runs.Load() < 2 {
		t.Errorf("source ran %d times, want a restart after the panic", src.runs.Load())
	}
	var failed bool
	for _, ev := range sink.events() {
		if ev.Event.Kind == event.KindState && ev.Tillwatch.Health.State == event.HealthFailed && strings.Contains(ev.Event.Reason, "panic") {
			failed = true
		}
	}
	if !failed {
		t.Error("no health event reported the source failure")
	}
}

func TestFullBusDropsAndReports(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := New(Options{Registerer: reg, BusSize: 4})
	// Without Run nothing consumes the bus: the 5th emit must drop, not block.
	for i := range 6 {
		p.Emit(proc("x", int64(i+1)))
	}
	if got := testutil.ToFloat64(p.dropped.WithLabelValues("bus")); got != 2 {
		t.Errorf("dropped = %v, want 2", got)
	}
	if st := p.Health().States()["pipeline"]; st != event.HealthDegraded {
		t.Errorf("pipeline health = %q, want degraded", st)
	}
}

func TestFailingSinkIsReportedAndOthersContinue(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := newTestPipeline(reg)
	p.AddSource(&listSource{name: "s", events: []event.Event{proc("bad", 1)}})
	p.AddDetector(matchDetector{})
	broken := &recordSink{name: "broken", fail: true}
	good := &recordSink{name: "good"}
	p.AddSink(broken, event.KindAlert)
	p.AddSink(good, event.KindAlert, event.KindState)
	runUntil(t, p, func() bool {
		for _, ev := range good.events() {
			if ev.Event.Kind == event.KindState && ev.Tillwatch.Health.Component == "sink/broken" {
				return true
			}
		}
		return false
	})
	if got := testutil.ToFloat64(p.stageTotal.WithLabelValues("sink", "broken", "error")); got != 1 {
		t.Errorf("sink error counter = %v, want 1", got)
	}
}

func TestDuplicateRegistrationPanics(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	p.AddDetector(matchDetector{})
	defer func() {
		if recover() == nil {
			t.Error("registering a detector name twice must fail loudly")
		}
	}()
	p.AddDetector(matchDetector{})
}

// orderSink records the order in which sinks saw alerts.
type orderSink struct {
	name  string
	mu    *sync.Mutex
	order *[]string
}

func (s orderSink) Name() string { return s.name }
func (s orderSink) Write(_ context.Context, ev *event.Event) error {
	if ev.Event.Kind == event.KindAlert {
		s.mu.Lock()
		*s.order = append(*s.order, s.name)
		s.mu.Unlock()
	}
	return nil
}
func (s orderSink) Close() error { return nil }

func TestJournalHoldsAlertsBeforeOtherSinks(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := newTestPipeline(reg)
	var mu sync.Mutex
	var order []string
	p.AddSource(&listSource{name: "s", events: []event.Event{proc("bad", 1), proc("bad", 2), proc("bad", 3)}})
	p.AddDetector(matchDetector{})
	p.SetJournal(orderSink{"journal", &mu, &order})
	p.AddSink(orderSink{"out", &mu, &order}, event.KindAlert)
	runUntil(t, p, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 6 })
	journaled := 0
	for _, name := range order {
		if name == "journal" {
			journaled++
		} else if journaled--; journaled < 0 {
			t.Fatalf("sink order %v: an alert reached another sink before the journal", order)
		}
	}
}

// TestEmittedAlertsReachSinks: an alert handed to Emit by a component that
// is not a detector (kill-switch refusals, refused rule bundles) takes the
// alert path, stamped, with no response; Emit after shutdown is counted
// and never panics.
func TestEmittedAlertsReachSinks(t *testing.T) {
	t.Parallel()
	p := newTestPipeline(prometheus.NewRegistry())
	p.AddSource(&listSource{name: "s"})
	p.AddDetector(matchDetector{})
	alerts := &recordSink{name: "alerts"}
	p.AddSink(alerts, event.KindAlert)
	emitted := event.Event{
		Event:  event.Meta{Kind: event.KindAlert, Category: []string{"configuration"}, Type: []string{"denied"}, Action: "x", Severity: 73, RiskScore: 73},
		Rule:   &event.Rule{ID: "TW-KS-0001", Name: "refused", Ruleset: event.RulesetKillswitch},
		Threat: &event.Threat{Framework: "MITRE ATT&CK"},
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.Emit(emitted)
	}()
	runUntil(t, p, func() bool { return len(alerts.events()) == 1 })
	a := alerts.events()[0]
	if err := a.Validate(); err != nil {
		t.Fatalf("emitted alert leaving the pipeline: %v", err)
	}
	if a.Host.ID != "h1" || a.Rule.ID != "TW-KS-0001" || (a.Tillwatch != nil && a.Tillwatch.Response != nil && a.Tillwatch.Response.Action != event.ActionNone) {
		t.Fatalf("emitted alert %+v %+v", a.Host, a.Tillwatch)
	}
	p.Emit(emitted) // after shutdown: dropped and counted, no panic
	if got := testutil.ToFloat64(p.dropped.WithLabelValues("after-shutdown")); got != 1 {
		t.Fatalf("dropped after shutdown = %v, want 1", got)
	}
}
