package elasticsearch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/storetest"
)

// EnvURL names the Elasticsearch the integration tests use. `make test`
// starts one (`make es-up`) and sets it; any 8.x cluster works.
const EnvURL = "TILLWATCH_ES_URL"

// esURL returns the test cluster or skips: locally, without a cluster, the
// unit tests still run.
func esURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Skipf("%s not set: run `make es-up` and export %s=http://127.0.0.1:9200 (make test does both)", EnvURL, EnvURL)
	}
	return u
}

// OpenTest opens a store on a namespace of its own and removes what it
// created when t ends.
func OpenTest(t *testing.T, o Options) *Store {
	t.Helper()
	if o.URL == "" {
		o.URL = esURL(t)
	}
	if o.Namespace == "" {
		b := make([]byte, 6)
		rand.Read(b)
		o.Namespace = "t" + hex.EncodeToString(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		cleanup(t, s)
	})
	return s
}

// cleanup deletes the test's state indices and data streams. The test node
// has no data-streams module (no DELETE _data_stream); there its streams
// stay until `make es-down` removes the node's data.
func cleanup(t *testing.T, s *Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.do(ctx, esapi.IndicesDeleteRequest{Index: s.StateIndices(), IgnoreUnavailable: esapi.BoolPtr(true)}, nil); err != nil {
		t.Logf("cleanup: %v", err)
	}
	err := s.do(ctx, esapi.IndicesDeleteDataStreamRequest{Name: []string{"logs-tillwatch.*-" + s.ns}}, nil)
	if err != nil && statusOf(err) != http.StatusMethodNotAllowed && statusOf(err) != http.StatusNotFound {
		t.Logf("cleanup data streams: %v", err)
	}
}

func TestSharedSuite(t *testing.T) {
	t.Parallel()
	esURL(t)
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s := OpenTest(t, Options{Now: now})
		// Small pages and bulk chunks, so the suite's lookups of many
		// hosts cross page boundaries.
		s.pageSize.Store(10)
		s.bulkSize.Store(7)
		return s
	})
}

// TestLayout checks the layout in docs/reference.md: each kind of document lands in its
// data stream, the templates are installed, and a replay is a 409.
func TestLayout(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	ctx := context.Background()
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	file := storetest.Telemetry("f1", "h1", ts)
	file.Dataset = "tillwatch.file"
	health := storetest.Telemetry("s1", "h1", ts)
	health.Kind, health.Dataset = "state", "tillwatch.health"
	docs := []store.Doc{storetest.Alert("a1", "h1", "r1", ts), storetest.Telemetry("p1", "h1", ts), file, health}
	if acc, dup, err := s.Ingest(ctx, docs); err != nil || acc != 4 || dup != 0 {
		t.Fatalf("Ingest = %d %d %v", acc, dup, err)
	}
	if _, err := s.Enroll(ctx, enrollReq("h1"), store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ stream, id string }{
		{StreamAlerts, "a1"}, {StreamProcess, "p1"}, {StreamFile, "f1"}, {StreamHealth, "s1"},
	}
	for _, tc := range tests {
		if err := s.refresh(ctx, s.Stream(tc.stream)); err != nil {
			t.Fatal(err)
		}
		r, err := s.search(ctx, s.Stream(tc.stream), map[string]any{"query": map[string]any{"ids": map[string]any{"values": []string{tc.id}}}})
		if err != nil || len(r.Hits.Hits) != 1 {
			t.Errorf("%s not in %s: %v %+v", tc.id, s.Stream(tc.stream), err, r)
		}
	}
	// Enrolment is audited.
	s.refresh(ctx, s.Stream(StreamAudit))
	r, err := s.search(ctx, s.Stream(StreamAudit), map[string]any{"query": map[string]any{"term": map[string]any{"event.action": "host-enrolled"}}})
	if err != nil || len(r.Hits.Hits) != 1 {
		t.Errorf("enrolment audit: %v, %d hits", err, len(r.Hits.Hits))
	}
	// The backing index of the alerts stream has our mappings.
	var m map[string]struct {
		Mappings struct {
			Properties map[string]any `json:"properties"`
		} `json:"mappings"`
	}
	if err := s.do(ctx, esapi.IndicesGetMappingRequest{Index: []string{s.Stream(StreamAlerts)}}, &m); err != nil {
		t.Fatal(err)
	}
	for idx, v := range m {
		if !strings.HasPrefix(idx, ".ds-"+s.Stream(StreamAlerts)) {
			t.Errorf("alerts live in %s, not a data stream backing index", idx)
		}
		rule, _ := v.Mappings.Properties["rule"].(map[string]any)
		ruleset, _ := rule["properties"].(map[string]any)["ruleset"].(map[string]any)
		if ruleset["type"] != "keyword" {
			t.Errorf("rule.ruleset mapped as %v, want keyword", ruleset)
		}
	}
}

// TestStateMappingUpgrade: a hosts index made by an older collector (strict,
// without the fields added since) gets them when a newer collector opens the
// store, so heartbeats carrying config and rules versions are stored rather
// than refused as unmapped fields.
func TestStateMappingUpgrade(t *testing.T) {
	t.Parallel()
	u := esURL(t)
	b := make([]byte, 6)
	rand.Read(b)
	ns := "t" + hex.EncodeToString(b)
	old := map[string]any{}
	for k, v := range stateMappings["hosts"]["properties"].(map[string]any) {
		if k != "config_version" && k != "rules_version" {
			old[k] = v
		}
	}
	body, _ := json.Marshal(map[string]any{"mappings": map[string]any{"dynamic": "strict", "properties": old}})
	req, _ := http.NewRequest(http.MethodPut, strings.TrimSuffix(u, "/")+"/tillwatch-hosts-"+ns, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating the old hosts index: %s", resp.Status)
	}

	s := OpenTest(t, Options{Namespace: ns})
	ctx := context.Background()
	if _, err := s.Enroll(ctx, enrollReq("h1"), store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	hb := api.Heartbeat{HostID: "h1", ConfigVersion: "0123456789ab", RulesVersion: "builtin-0123456789ab"}
	if err := s.Heartbeat(ctx, "h1", hb); err != nil {
		t.Fatalf("heartbeat on an upgraded hosts index: %v", err)
	}
	hosts, err := s.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].ConfigVersion != hb.ConfigVersion || hosts[0].RulesVersion != hb.RulesVersion {
		t.Fatalf("Hosts = %+v, %v", hosts, err)
	}
	// Still strict: a field nobody mapped is refused.
	err = s.do(ctx, esapi.IndexRequest{Index: s.stateIndex("hosts"), DocumentID: "x", Body: strings.NewReader(`{"unmapped":"x"}`)}, nil)
	if err == nil {
		t.Error("the upgraded hosts index accepted an unmapped field")
	}
}

func enrollReq(host string) api.EnrollRequest {
	return api.EnrollRequest{HostID: host, HostName: host, OS: "linux", AgentVersion: "1"}
}

// TestDeadLetter: a document Elasticsearch refuses for its content (an
// object where the mapping has a keyword) is kept whole in the dead-letter
// index and counted as stored, never dropped.
func TestDeadLetter(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := OpenTest(t, Options{Registry: reg})
	ctx := context.Background()
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	bad := storetest.Alert("bad1", "h1", "r1", ts)
	bad.JSON = []byte(`{"@timestamp":"2025-06-01T12:00:00Z","event":{"id":"bad1","kind":"alert"},"host":{"id":"h1"},"rule":{"id":{"nested":"object where keyword is mapped"},"ruleset":"rmm"}}`)
	good := storetest.Alert("good1", "h1", "r1", ts)
	acc, dup, err := s.Ingest(ctx, []store.Doc{bad, good})
	if err != nil || acc != 2 || dup != 0 {
		t.Fatalf("Ingest = %d %d %v, want 2 accepted", acc, dup, err)
	}
	dl, err := s.DeadLetters(ctx)
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %s %v, want 1", dl, err)
	}
	var d struct{ EventID, Original, Error string }
	var raw map[string]string
	json.Unmarshal(dl[0], &raw)
	d.EventID, d.Original, d.Error = raw["event_id"], raw["original"], raw["error"]
	if d.EventID != "bad1" || d.Original != string(bad.JSON) || !strings.Contains(d.Error, "400") {
		t.Errorf("dead letter %+v", d)
	}
	if n := testutil.ToFloat64(s.m.items.WithLabelValues("deadletter")); n != 1 {
		t.Errorf("deadletter counter %v, want 1", n)
	}
	// A replay of the bad document is a duplicate, not a second letter.
	if acc, dup, err := s.Ingest(ctx, []store.Doc{good}); err != nil || acc != 0 || dup != 1 {
		t.Errorf("replay = %d %d %v", acc, dup, err)
	}
}

// flakyProxy forwards to Elasticsearch but answers the first n bulk
// requests with status (429 or 503), as an overloaded cluster does.
func flakyProxy(t *testing.T, target string, status int, n int32) (string, *atomic.Int32) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_bulk") && hits.Add(1) <= n {
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.WriteHeader(status)
			w.Write([]byte(`{"error":{"type":"es_rejected_execution_exception","reason":"test overload"},"status":429}`))
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, u.ResolveReference(&url.URL{Path: r.URL.Path, RawQuery: r.URL.RawQuery}).String(), r.Body)
		req.Header = r.Header.Clone()
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := res.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Listener = ln
	proxy.Start()
	t.Cleanup(proxy.Close)
	return proxy.URL, &hits
}

// TestOverloadIsRetried: bulk requests answered 429/503 are retried with
// backoff and the batch is then stored exactly once.
func TestOverloadIsRetried(t *testing.T) {
	t.Parallel()
	target := esURL(t)
	tests := []struct {
		name   string
		status int
	}{{"429", http.StatusTooManyRequests}, {"503", http.StatusServiceUnavailable}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxyURL, hits := flakyProxy(t, target, tc.status, 2)
			s := OpenTest(t, Options{URL: proxyURL})
			ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			acc, dup, err := s.Ingest(ctx, []store.Doc{storetest.Alert("o1", "h1", "r", ts), storetest.Alert("o2", "h1", "r", ts)})
			if err != nil || acc != 2 || dup != 0 {
				t.Fatalf("Ingest = %d %d %v, want 2 accepted", acc, dup, err)
			}
			if hits.Load() < 3 {
				t.Errorf("%d bulk requests reached the proxy; want the 2 refused plus a retry", hits.Load())
			}
			got, err := s.QueryAlerts(ctx, store.AlertFilter{})
			if err != nil || len(got) != 2 {
				t.Errorf("stored %d alerts (%v), want 2", len(got), err)
			}
		})
	}
}

// TestDeadCluster: a cluster that does not answer gives a one-line error at
// Open, and Ingest on a store whose cluster died fails (the sensor keeps
// the batch) rather than confirming.
func TestDeadCluster(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Open(ctx, Options{URL: dead, MaxRetries: 1})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), dead) {
		t.Errorf("Open(dead) = %v; want one line naming %s", err, dead)
	}

	target := esURL(t)
	u, _ := url.Parse(target)
	var down atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close() // connection reset, as a dead node
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, u.ResolveReference(&url.URL{Path: r.URL.Path, RawQuery: r.URL.RawQuery}).String(), r.Body)
		req.Header = r.Header.Clone()
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		var buf [32 << 10]byte
		for {
			n, err := res.Body.Read(buf[:])
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(proxy.Close)
	s := OpenTest(t, Options{URL: proxy.URL, MaxRetries: 2})
	down.Store(true)
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	acc, _, err := s.Ingest(ctx, []store.Doc{storetest.Alert("d1", "h1", "r", ts)})
	if err == nil || acc != 0 {
		t.Fatalf("Ingest with the cluster down = %d accepted, %v; want an error and nothing confirmed", acc, err)
	}
	down.Store(false)
	// A budget of its own: on a loaded machine the dead cluster's retries
	// above can take most of the first one.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	defer rcancel()
	acc, dup, err := s.Ingest(rctx, []store.Doc{storetest.Alert("d1", "h1", "r", ts)})
	if err != nil || acc+dup != 1 {
		t.Errorf("resend after recovery = %d %d %v", acc, dup, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("timed out")
	}
}

// TestIngestGivesUpCleanly: a batch whose request is abandoned (the
// sensor gave up; the context is done while items are being queued) fails
// with an error and leaves the store working. It used to count the
// WaitGroup below zero and crash the collector (found by the ingest
// benchmark with 64 batches in flight).
func TestIngestGivesUpCleanly(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	ts := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var docs []store.Doc
	for i := range 3000 {
		docs = append(docs, storetest.Alert(fmt.Sprintf("gone-%d", i), "h1", "r1", ts))
	}
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.Ingest(ctx, docs); err == nil {
			t.Fatal("an abandoned batch reported success")
		}
	}
	acc, _, err := s.Ingest(context.Background(), []store.Doc{storetest.Alert("after-1", "h1", "r1", ts)})
	if err != nil || acc != 1 {
		t.Fatalf("store unusable after abandoned batches: %d %v", acc, err)
	}
}

// TestHostWritesStartFromTheVersionWritten: a collector tracking a host's
// sequences batch after batch does not read the host back before each
// write (each read was a real-time GET of a document just written); when
// another collector on the same store wrote the host in between, the
// conditional write conflicts and the host is read again, so neither
// collector's numbers are lost.
func TestHostWritesStartFromTheVersionWritten(t *testing.T) {
	t.Parallel()
	a := OpenTest(t, Options{})
	ctx := context.Background()
	if _, err := a.Enroll(ctx, enrollReq("till-1"), store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	hostGets := func() int64 {
		t.Helper()
		var st struct {
			Indices map[string]struct {
				Total struct {
					Get struct {
						Total int64 `json:"total"`
					} `json:"get"`
				} `json:"total"`
			} `json:"indices"`
		}
		index := a.stateIndex("hosts")
		if err := a.do(ctx, esapi.IndicesStatsRequest{Index: []string{index}, Metric: []string{"get"}}, &st); err != nil {
			t.Fatal(err)
		}
		return st.Indices[index].Total.Get.Total
	}
	before := hostGets()
	for i := range 5 {
		q := int64(i*10 + 1)
		gaps, err := a.TrackSequences(ctx, "till-1", []int64{q, q + 1, q + 2, q + 3, q + 4, q + 5, q + 6, q + 7, q + 8, q + 9})
		if err != nil || len(gaps) != 0 {
			t.Fatalf("batch %d: gaps %v, err %v", i, gaps, err)
		}
	}
	if n := hostGets() - before; n != 0 {
		t.Errorf("5 batches made %d reads of the host document, want 0", n)
	}

	// Another collector on the same store takes the next batch.
	b, err := Open(ctx, Options{URL: esURL(t), Namespace: a.ns})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if gaps, err := b.TrackSequences(ctx, "till-1", []int64{51, 52}); err != nil || len(gaps) != 0 {
		t.Fatalf("second collector: gaps %v, err %v", gaps, err)
	}
	// a's remembered version is stale now: its write conflicts, it reads
	// the host again and sees 52 as the last number, so 53 is no gap and
	// 56 after it leaves one of two (54-55).
	gaps, err := a.TrackSequences(ctx, "till-1", []int64{53, 56})
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0] != (store.SequenceGap{From: 54, To: 55}) {
		t.Errorf("gaps after the other collector's batch = %v, want [54-55]", gaps)
	}
	hosts, err := a.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].EventsLost != 2 {
		t.Errorf("hosts = %+v, want till-1 with 2 events lost", hosts)
	}
}
