// Package elasticsearch is the collector's store for a chain: many
// collectors behind a load balancer share one Elasticsearch cluster, so
// every piece of state (tokens, hosts, sequence counters) lives in the
// cluster and every update is atomic there (optimistic concurrency on
// _seq_no/_primary_term, op_type=create for events).
//
// Layout (docs/reference.md): events go to the data streams
// logs-tillwatch.{alerts,process,file,audit,health}-<namespace>, with
// event.id as _id so a replayed batch is answered 409 and counted as a
// duplicate. The collector's own state lives in the regular indices
// tillwatch-{hosts,tokens,deadletter,commands,command-hosts}-<namespace>.
// Open installs the index templates and creates the state indices.
//
// Queries refresh what they read first, so an analyst sees every event the
// collector has confirmed to a sensor, as with SQLite.
package elasticsearch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	es "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/store"
)

// TokenPrefix starts every token (store.TokenPrefix).
const TokenPrefix = store.TokenPrefix

// DefaultNamespace is the data stream namespace when none is configured.
const DefaultNamespace = "default"

// namespaceRE is what Elasticsearch accepts in a data stream namespace (no
// '-', which separates the parts of the name) and in an index name.
var namespaceRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// Options configures Open. URL is required; the rest has defaults.
type Options struct {
	// URL of the cluster, e.g. https://es.example:9200 (user:pass@ allowed).
	URL string
	// Namespace of the data streams and the suffix of the state indices;
	// "" means "default". Tests use one namespace each.
	Namespace string
	// Transport overrides the HTTP transport (TLS settings); nil uses Go's.
	Transport http.RoundTripper
	// Logger receives structured logs; nil discards.
	Logger *slog.Logger
	// Registry receives the store's metrics; nil registers none.
	Registry prometheus.Registerer
	// Now is the clock for last_seen and friends; nil means time.Now.
	Now func() time.Time
	// FlushInterval bounds how long an event waits in the bulk indexer for
	// company; 0 means 50ms.
	FlushInterval time.Duration
	// Workers is the number of concurrent bulk requests; 0 means 2. With
	// the indexer's queue they bound what the collector holds in memory:
	// when Elasticsearch is slow, Ingest blocks (back-pressure) and the
	// sensor sees 503 when its request's deadline passes.
	Workers int
	// MaxRetries bounds the retries of one request (429, 502, 503, 504,
	// network errors) and of items Elasticsearch rejected as overloaded;
	// 0 means 5.
	MaxRetries int
}

// Store implements store.Store and store.SequenceTracker on Elasticsearch.
type Store struct {
	c      *es.Client
	ns     string
	log    *slog.Logger
	now    func() time.Time
	bi     esutil.BulkIndexer
	m      *metrics
	retry  int
	closed chan struct{}
	// pageSize and bulkSize override the command store's search page and
	// bulk chunk (tests make them small to cross page boundaries cheaply).
	// Atomic: the credentials poller reads documents from its own
	// goroutine while a test sets them.
	pageSize, bulkSize atomic.Int64

	// touched is when this collector last wrote each host's last_seen
	// from its batches: a busy sensor's batches update it at most every
	// touchEvery, not one extra round trip per batch.
	touchMu sync.Mutex
	touched map[string]time.Time

	// hostVersions is each host document as this collector last wrote
	// it, with its version: the next read-modify-write of the host starts
	// from it instead of a GET (updateHost).
	hostMu       sync.Mutex
	hostVersions map[string]cachedHost

	// flights are the documents handed to the bulk indexer and not yet
	// answered to a caller (flights.go).
	flights flights

	// creds remembers confirmed agent credentials (credentials.go);
	// stopCreds ends its polling.
	creds     *store.CredentialCache
	stopCreds context.CancelFunc
}

var (
	_ store.Store           = (*Store)(nil)
	_ store.SequenceTracker = (*Store)(nil)
)

// Open connects, checks the cluster answers, installs the index templates and
// creates the state indices. A dead cluster is a one-line error naming the URL.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.URL == "" {
		return nil, errors.New("elasticsearch: no URL")
	}
	ns := o.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if !namespaceRE.MatchString(ns) {
		return nil, fmt.Errorf("elasticsearch: namespace %q must be 1-64 of a-z, 0-9 and _", ns)
	}
	s := &Store{ns: ns, log: o.Logger, now: o.Now, retry: o.MaxRetries, closed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.retry <= 0 {
		s.retry = 5
	}
	s.log = s.log.With("store", "elasticsearch", "namespace", ns)
	cfg := es.Config{
		Addresses:     []string{o.URL},
		Transport:     o.Transport,
		RetryOnStatus: []int{429, 502, 503, 504},
		MaxRetries:    s.retry,
		// Full jitter on an exponential base, capped: many collectors
		// retrying a busy cluster must not do it in lockstep.
		RetryBackoff: func(attempt int) time.Duration { return backoff(attempt) },
		// The client's product check needs GET /, which the test node lacks;
		// every response carries X-Elastic-Product anyway, checked below.
	}
	c, err := es.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch %s: %w", redact(o.URL), err)
	}
	s.c = c
	s.m = newMetrics(o.Registry)
	if err := s.Ping(ctx); err != nil {
		return nil, fmt.Errorf("elasticsearch %s does not answer: %w (is it running? check --elasticsearch)", redact(o.URL), err)
	}
	if err := s.install(ctx); err != nil {
		return nil, fmt.Errorf("elasticsearch %s: %w", redact(o.URL), err)
	}
	flush := o.FlushInterval
	if flush <= 0 {
		flush = 50 * time.Millisecond
	}
	workers := o.Workers
	if workers <= 0 {
		workers = 2
	}
	s.bi, err = esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client:              c,
		NumWorkers:          workers,
		FlushBytes:          4 << 20,
		FlushInterval:       flush,
		QueueSizeMultiplier: 512,
		FilterPath:          BulkFilterPath,
		Decoder:             bulkDecoder{},
		OnError: func(_ context.Context, err error) {
			s.log.Warn("bulk request failed; its events are retried or reported to the sensor", "err", err)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	s.creds = store.NewCredentialCache(s.CredentialsGeneration, s.now)
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCreds = cancel
	go s.creds.Run(cctx)
	return s, nil
}

// Namespace is the data stream namespace this store writes.
func (s *Store) Namespace() string { return s.ns }

// Stream is the data stream name of dataset in this store's namespace.
func (s *Store) Stream(dataset string) string { return "logs-" + dataset + "-" + s.ns }

func (s *Store) stateIndex(kind string) string { return "tillwatch-" + kind + "-" + s.ns }

// StateIndices lists the regular indices the store keeps (for cleanup).
func (s *Store) StateIndices() []string {
	return []string{s.stateIndex("hosts"), s.stateIndex("tokens"), s.stateIndex("deadletter"),
		s.stateIndex("commands"), s.stateIndex("command-hosts"), s.stateIndex(kindGenerations)}
}

// Client is the underlying client (tests and tools use it).
func (s *Store) Client() *es.Client { return s.c }

// DetectCapabilities probes which non-core field types the cluster maps, by
// putting (and removing) a throw-away component template per type.
func (s *Store) DetectCapabilities(ctx context.Context) (Capabilities, error) {
	probe := func(typ string) (bool, error) {
		name := "tillwatch-probe-" + strings.ReplaceAll(typ, "_", "-")
		err := s.do(ctx, esapi.ClusterPutComponentTemplateRequest{Name: name, Body: jsonBody(map[string]any{
			"template": map[string]any{"mappings": map[string]any{"properties": map[string]any{"f": map[string]any{"type": typ}}}},
		})}, nil)
		var e *esError
		if errors.As(err, &e) && e.Type == "mapper_parsing_exception" {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("probe %s: %w", typ, err)
		}
		return true, s.do(ctx, esapi.ClusterDeleteComponentTemplateRequest{Name: name}, nil)
	}
	var c Capabilities
	var err error
	if c.Wildcard, err = probe("wildcard"); err != nil {
		return c, err
	}
	if c.ConstantKeyword, err = probe("constant_keyword"); err != nil {
		return c, err
	}
	c.MatchOnlyText, err = probe("match_only_text")
	return c, err
}

// install puts the templates (idempotent: the same body again is a no-op for
// the cluster), creates the state indices if missing and puts their
// mappings again if not, so fields added since they were made exist.
// Collectors starting together may race here; both write the same bodies.
func (s *Store) install(ctx context.Context) error {
	caps, err := s.DetectCapabilities(ctx)
	if err != nil {
		return err
	}
	s.log.Info("elasticsearch field types", "wildcard", caps.Wildcard, "constant_keyword", caps.ConstantKeyword, "match_only_text", caps.MatchOnlyText)
	tpls, err := Templates(caps)
	if err != nil {
		return err
	}
	for _, t := range tpls {
		req := rawRequest{Method: http.MethodPut, Path: "/" + t.Path, Body: jsonBody(t.Body)}
		if err := s.do(ctx, req, nil); err != nil {
			return fmt.Errorf("install template %s: %w", t.Path, err)
		}
	}
	for kind, mapping := range stateMappings {
		err := s.do(ctx, esapi.IndicesCreateRequest{Index: s.stateIndex(kind), Body: jsonBody(map[string]any{
			"settings": map[string]any{"index.hidden": false},
			"mappings": mapping,
		})}, nil)
		var e *esError
		if errors.As(err, &e) && e.Type == "resource_already_exists_exception" {
			// An index made by an older collector lacks the fields added
			// since, and is strict: put the mapping again. Adding fields is
			// allowed on a live index; the ones already there are unchanged.
			err = s.do(ctx, esapi.IndicesPutMappingRequest{Index: []string{s.stateIndex(kind)}, Body: jsonBody(mapping)}, nil)
			if err != nil {
				return fmt.Errorf("update mapping of index %s: %w", s.stateIndex(kind), err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("create index %s: %w", s.stateIndex(kind), err)
		}
	}
	return nil
}

// Close implements store.Store: it flushes pending bulk items and releases
// the client.
func (s *Store) Close() error {
	select {
	case <-s.closed:
		return errors.New("elasticsearch: store already closed")
	default:
	}
	close(s.closed)
	s.stopCreds()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.bi.Close(ctx)
}
