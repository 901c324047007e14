//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	es "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esutil"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
)

// The collector's bulk indexer settings (collector/store/elasticsearch),
// so the bare indexer differs from it only by not being behind the
// collector.
const (
	bulkWorkers    = 2
	bulkFlushBytes = 4 << 20
	bulkFlushEvery = 50 * time.Millisecond
)

// esDo does a request against the node and decodes the JSON answer.
func esDo(method, url string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// DefaultESNamespace is the collector's elasticsearch_namespace in the
// benchmark: its own, so that other users of the node (tests, another
// collector on "default") neither disturb nor are disturbed.
const DefaultESNamespace = "ingestbench"

// alertsStream is the data stream the collector stores alerts in.
func alertsStream(ns string) string { return "logs-tillwatch.alerts-" + ns }

// rolloverAlerts starts a new backing index for the collector's alerts
// stream, so that its run writes into an empty index as the bare indexer
// does: create with an _id looks the id up in the write index, and a node
// kept between runs had put millions of documents there (the collector's
// run then cost Elasticsearch 7.7 s per 100,000 alerts instead of 5.4 s).
// A stream not created yet is fresh already.
func rolloverAlerts(url, ns string) error {
	err := esDo(http.MethodPost, strings.TrimRight(url, "/")+"/"+alertsStream(ns)+"/_rollover", nil, nil)
	if err != nil && strings.Contains(err.Error(), "404 Not Found") {
		return nil
	}
	return err
}

// esVersion checks that the node answers and returns its version.
func esVersion(url string) (string, error) {
	var health struct {
		Status string `json:"status"`
	}
	if err := esDo(http.MethodGet, strings.TrimRight(url, "/")+"/_cluster/health?timeout=5s", nil, &health); err != nil {
		return "", err
	}
	if health.Status != "green" && health.Status != "yellow" {
		return "", fmt.Errorf("cluster health %q", health.Status)
	}
	var nodes struct {
		Nodes map[string]struct {
			Version string `json:"version"`
		} `json:"nodes"`
	}
	if err := esDo(http.MethodGet, strings.TrimRight(url, "/")+"/_nodes/_local?filter_path=nodes.*.version", nil, &nodes); err != nil {
		return "", err
	}
	for _, n := range nodes.Nodes {
		return n.Version, nil
	}
	return "?", nil
}

// esCPUSeconds is the CPU time the node's process has used (0 if unknown
// or url is empty).
func esCPUSeconds(url string) float64 {
	if url == "" {
		return 0
	}
	var st struct {
		Nodes map[string]struct {
			Process struct {
				CPU struct {
					TotalInMillis float64 `json:"total_in_millis"`
				} `json:"cpu"`
			} `json:"process"`
		} `json:"nodes"`
	}
	if esDo(http.MethodGet, strings.TrimRight(url, "/")+"/_nodes/_local/stats/process", nil, &st) != nil {
		return 0
	}
	for _, n := range st.Nodes {
		return n.Process.CPU.TotalInMillis / 1000
	}
	return 0
}

// esStateOps is how many writes and reads (get) the node has done so far
// on the collector's state indices (tillwatch-*-ns: hosts, tokens,
// commands), as opposed to the event streams (0, 0 if unknown or url is
// empty).
func esStateOps(url, ns string) (writes, reads float64) {
	if url == "" {
		return 0, 0
	}
	var st struct {
		Indices map[string]struct {
			Total struct {
				Indexing struct {
					Index float64 `json:"index_total"`
				} `json:"indexing"`
				Get struct {
					Total float64 `json:"total"`
				} `json:"get"`
			} `json:"total"`
		} `json:"indices"`
	}
	if esDo(http.MethodGet, strings.TrimRight(url, "/")+"/_stats/indexing,get", nil, &st) != nil {
		return 0, 0
	}
	for name, x := range st.Indices {
		if strings.HasPrefix(name, "tillwatch-") && strings.HasSuffix(name, "-"+ns) {
			writes += x.Total.Indexing.Index
			reads += x.Total.Get.Total
		}
	}
	return writes, reads
}

// bulk is the baseline: a bare esutil.BulkIndexer writing the same
// documents, through a client that retries like the collector's, into a
// throwaway index with the mappings of the collector's
// alerts data stream. (A data stream of its own would be closer still, but
// this test node cannot delete data streams; see
// docs/elasticsearch-testing.md.)
type bulk struct {
	url, index string
	c          *es.Client
	stored     int64 // documents in the index after the last run
}

func newBulk(ctx context.Context, url string) (*bulk, error) {
	url = strings.TrimRight(url, "/")
	// Retries as the collector's client does (collector/store/elasticsearch):
	// a node short of heap answers a bulk request 429.
	c, err := es.NewClient(es.Config{Addresses: []string{url}, RetryOnStatus: []int{429, 502, 503, 504}, MaxRetries: 5,
		RetryBackoff: func(attempt int) time.Duration { return min(100*time.Millisecond<<min(attempt, 6), 5*time.Second) }})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	bk := &bulk{url: url, index: "tillwatch-ingestbench-" + hex.EncodeToString(b), c: c}
	// The collector installed the templates; take what an alerts stream
	// of any namespace would get.
	var sim struct {
		Template struct {
			Settings map[string]any `json:"settings"`
			Mappings map[string]any `json:"mappings"`
		} `json:"template"`
	}
	if err := esDo(http.MethodPost, url+"/_index_template/_simulate_index/logs-tillwatch.alerts-ingestbench", nil, &sim); err != nil {
		return nil, fmt.Errorf("alerts template: %w", err)
	}
	delete(sim.Template.Mappings, "_data_stream_timestamp")
	if err := esDo(http.MethodPut, url+"/"+bk.index, map[string]any{"settings": sim.Template.Settings, "mappings": sim.Template.Mappings}, nil); err != nil {
		return nil, fmt.Errorf("create %s: %w", bk.index, err)
	}
	return bk, ctx.Err()
}

// close deletes the throwaway index.
func (b *bulk) close() {
	if err := esDo(http.MethodDelete, b.url+"/"+b.index, nil, nil); err != nil {
		fmt.Fprintf(os.Stderr, "ingestbench: delete %s: %v\n", b.index, err)
	}
}

// run bulk-creates (with event.id as _id, as the collector does) the
// documents of batches first..first+o.Batches-1 of every host, in the
// order the senders send them, and counts what the index holds after.
func (b *bulk) run(ctx context.Context, o Options, h *hosts, first int) (Run, error) {
	r := Run{Target: "bare esutil.BulkIndexer", Sent: int64(o.Hosts * o.Batches * o.BatchSize)}
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client: b.c, Index: b.index, NumWorkers: bulkWorkers, FlushBytes: bulkFlushBytes, FlushInterval: bulkFlushEvery,
		// The node writes the same trimmed answers for both; decoding
		// them stays the bare indexer's default.
		FilterPath: elasticsearch.BulkFilterPath,
	})
	if err != nil {
		return r, err
	}
	var ok, dup, failed atomic.Int64
	var firstErr atomic.Value
	esCPU0 := esCPUSeconds(b.url)
	self0, _ := benchproc.Read(o.ProcRoot, os.Getpid())
	start := time.Now()
	for bn := first; bn < first+o.Batches; bn++ {
		for i := range o.Hosts {
			lines := bytes.Split(bytes.TrimSuffix(h.batch(i, bn, o.BatchSize), []byte("\n")), []byte("\n"))
			for n, l := range lines {
				err := bi.Add(ctx, esutil.BulkIndexerItem{
					Action: "create", DocumentID: h.id(i, bn, o.BatchSize, n), Body: bytes.NewReader(l),
					OnSuccess: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem) { ok.Add(1) },
					OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
						if res.Status == http.StatusConflict {
							dup.Add(1)
							return
						}
						failed.Add(1)
						if err == nil {
							err = errors.New(res.Error.Type + ": " + res.Error.Reason)
						}
						firstErr.CompareAndSwap(nil, err.Error())
					},
				})
				if err != nil {
					return r, err
				}
			}
		}
	}
	if err := bi.Close(ctx); err != nil {
		return r, err
	}
	r.Elapsed = time.Since(start)
	self1, _ := benchproc.Read(o.ProcRoot, os.Getpid())
	r.SenderCPU = float64(self1.CPUTicks-self0.CPUTicks) / benchproc.ClockTicks
	r.ElasticsearchCPU = esCPUSeconds(b.url) - esCPU0
	r.Accepted, r.Duplicates, r.Rejected = ok.Load(), dup.Load(), failed.Load()
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	if err := esDo(http.MethodPost, b.url+"/"+b.index+"/_refresh", nil, nil); err != nil {
		return r, err
	}
	var count struct {
		Count int64 `json:"count"`
	}
	if err := esDo(http.MethodGet, b.url+"/"+b.index+"/_count", nil, &count); err != nil {
		return r, err
	}
	// The index holds every round's documents.
	r.Stored, b.stored = count.Count-b.stored, count.Count
	r.StoredIn = time.Since(start)
	return r, nil
}
