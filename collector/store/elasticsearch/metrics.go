package elasticsearch

import "github.com/prometheus/client_golang/prometheus"

// metrics are the store's counters; registered on the injected registry.
type metrics struct {
	items     *prometheus.CounterVec // result: created, duplicate, retried, deadletter, failed, rejoined
	conflicts prometheus.Counter
	wait      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_collector_es_items_total",
			Help: "Bulk items by outcome: created, duplicate (409 on replay), retried (429/5xx), deadletter (refused for good, kept in tillwatch-deadletter-*), failed (reported to the sensor, which resends), rejoined (a resent document still in flight or answered after its first sender gave up: answered from that, not sent again).",
		}, []string{"result"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tillwatch_collector_es_host_conflicts_total",
			Help: "Optimistic-concurrency conflicts on host documents (another collector or request wrote the host first; retried).",
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tillwatch_collector_es_ingest_seconds",
			Help:    "Time from handing a batch to the bulk indexer to Elasticsearch confirming every item; grows when Elasticsearch is slow (back-pressure).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.items, m.conflicts, m.wait)
	}
	return m
}
