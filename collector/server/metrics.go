package server

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tillwatch/tillwatch/collector/store"
)

const namespace = "tillwatch_collector"

type metrics struct {
	requests   *prometheus.CounterVec
	ingested   *prometheus.CounterVec
	enrolments prometheus.Counter
	// enrolConflicts counts enrolments refused because the host id is
	// bound to another host key (each also raises an alert).
	enrolConflicts prometheus.Counter
	authFailures   *prometheus.CounterVec
	throttled      prometheus.Counter

	commandsIssued    *prometheus.CounterVec
	commandsDelivered prometheus.Counter
	commandAcks       *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, st store.Store) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "ingest_events_total",
			Help: "Events received, by result: accepted (stored), duplicate (already stored), rejected (malformed).",
		}, []string{"result"}),
		enrolConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "enrol_conflicts_total",
			Help: "Enrolments refused because the host id is bound to another host key (impersonation attempts).",
		}),
		enrolments: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "enrolments_total",
			Help: "Successful sensor enrolments (including re-enrolments).",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "auth_failures_total",
			Help: "Refused requests by reason: missing, unknown (token), expired (token), forbidden (role).",
		}, []string{"reason"}),
		commandsIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "killswitch_commands_issued_total",
			Help: "Kill-switch commands issued through this collector's API, by action and state (active or pending-approval).",
		}, []string{"action", "state"}),
		commandsDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "killswitch_deliveries_total",
			Help: "Kill-switch commands handed to sensors (redeliveries included).",
		}),
		commandAcks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "killswitch_acks_total",
			Help: "Kill-switch acknowledgements by status: ok, noop, failed, refused.",
		}, []string{"status"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "ingest_throttled_total",
			Help: "Batches answered 429 because MaxConcurrentIngest batches were already being stored.",
		}),
	}
	// Counted at scrape time so the gauge is right across restarts and
	// after `token create` or another collector process changed the store.
	hosts := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "hosts",
		Help: "Enrolled hosts (NaN when the store does not answer).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs, err := st.Hosts(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(len(hs))
	})
	// Pre-create the label values operators alert on, so they read 0
	// rather than being absent before the first event.
	for _, r := range []string{"accepted", "duplicate", "rejected"} {
		m.ingested.WithLabelValues(r)
	}
	for _, r := range []string{"missing", "unknown", "expired", "forbidden"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.requests, m.ingested, m.enrolments, m.enrolConflicts, m.authFailures, m.throttled, hosts,
		m.commandsIssued, m.commandsDelivered, m.commandAcks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: register metrics: %w", err)
		}
	}
	return m, nil
}
