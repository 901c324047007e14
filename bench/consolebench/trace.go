package main

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// esTrace, when -trace is set, times every request the Elasticsearch store
// makes while a page is measured: which store calls make a slow load.
var esTrace *tracer

// tracer records the duration of each request by its method and path, the
// namespace written as NS so the same call on any namespace reads alike.
type tracer struct {
	mu    sync.Mutex
	calls map[string][]time.Duration
}

type traceTransport struct {
	next http.RoundTripper
	t    *tracer
	ns   string
}

func (tt traceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t0 := time.Now()
	res, err := tt.next.RoundTrip(r)
	if err == nil {
		// The time to the answer's headers: Elasticsearch sends them when
		// the answer is ready, and a search answer is small.
		tt.t.add(r.Method+" "+strings.ReplaceAll(r.URL.Path, tt.ns, "NS"), time.Since(t0))
	}
	return res, err
}

func (t *tracer) wrap(next http.RoundTripper, ns string) http.RoundTripper {
	return traceTransport{next: next, t: t, ns: ns}
}

func (t *tracer) add(key string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls[key] = append(t.calls[key], d)
}

func (t *tracer) reset() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = map[string][]time.Duration{}
}

// report prints the page's requests, the slowest worst time first.
func (t *tracer) report(page string, runs int) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	type row struct {
		key           string
		n             int
		p50, max, sum time.Duration
	}
	var rows []row
	var total time.Duration
	for k, ds := range t.calls {
		slices.Sort(ds)
		r := row{key: k, n: len(ds), p50: ds[len(ds)/2], max: ds[len(ds)-1]}
		for _, d := range ds {
			r.sum += d
		}
		total += r.sum
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b row) int { return int(b.max - a.max) })
	fmt.Fprintf(os.Stderr, "trace %s: %.1f requests a load, %s of Elasticsearch a load on average\n", page,
		float64(sumN(rows, func(r row) int { return r.n }))/float64(runs), ms(total/time.Duration(max(runs, 1))))
	for _, r := range rows {
		fmt.Fprintf(os.Stderr, "  %5.1f/load  p50 %7s  max %7s  %s\n", float64(r.n)/float64(runs), ms(r.p50), ms(r.max), r.key)
	}
}

func sumN[T any](xs []T, f func(T) int) int {
	n := 0
	for _, x := range xs {
		n += f(x)
	}
	return n
}
