package pipeline

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Health tracks the state of every component and turns each change into a
// health event (event.kind "state", dataset tillwatch.health), so degradation
// is never silent: it reaches the log, the metrics, the sinks and the
// collector's heartbeat.
type Health struct {
	mu     sync.Mutex
	states map[string]string
	log    *slog.Logger
	gauge  *prometheus.GaugeVec
	out    func(event.Event) // set by the pipeline; nil until Run
	early  [][3]string       // component, state, reason reported before Run
	now    func() time.Time
}

func newHealth(log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Health {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tillwatch_component_health",
		Help: "Component health: 0 ok, 1 degraded, 2 failed.",
	}, []string{"component"})
	reg.MustRegister(g)
	return &Health{states: map[string]string{}, log: log, gauge: g, now: now}
}

// Report records component's state with a reason an operator can act on.
// A report that does not change the state is not repeated as an event.
func (h *Health) Report(component, state, reason string) {
	h.mu.Lock()
	prev, known := h.states[component]
	h.states[component] = state
	out := h.out
	h.mu.Unlock()
	h.gauge.WithLabelValues(component).Set(map[string]float64{event.HealthOK: 0, event.HealthDegraded: 1, event.HealthFailed: 2}[state])
	if known && prev == state {
		return
	}
	if !known && state == event.HealthOK {
		return // the normal start of a component is not news
	}
	lvl := slog.LevelWarn
	if state == event.HealthOK {
		lvl = slog.LevelInfo
	}
	h.log.Log(context.Background(), lvl, "component health changed", logkey.Component, component, "state", state, logkey.Reason, reason)
	if out == nil {
		// Reported while wiring, before Run: announced when Run starts.
		h.mu.Lock()
		h.early = append(h.early, [3]string{component, state, reason})
		h.mu.Unlock()
		return
	}
	out(h.event(component, state, reason))
}

func (h *Health) event(component, state, reason string) event.Event {
	ev := event.Event{
		Timestamp: h.now(),
		Message:   component + " " + state + ": " + reason,
		Event: event.Meta{
			Kind: event.KindState, ID: event.NewID(), Category: []string{"host"}, Type: []string{"info"},
			Action: "health-" + state, Dataset: event.DatasetHealth, Reason: reason,
		},
		Tillwatch: &event.Tillwatch{Health: &event.Health{Component: component, State: state}},
	}
	if state != event.HealthOK {
		ev.Error = &event.Error{Message: reason}
	}
	return ev
}

// States returns a copy of every component's current state, for heartbeats.
func (h *Health) States() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.states)
}

func (h *Health) setOut(out func(event.Event)) {
	h.mu.Lock()
	h.out = out
	early := h.early
	h.early = nil
	h.mu.Unlock()
	for _, e := range early {
		out(h.event(e[0], e[1], e[2]))
	}
}
