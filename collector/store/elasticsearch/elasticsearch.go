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
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	es "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
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
	pageSize, bulkSize int

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
}

// cachedHost is a host document and the version it was written at.
type cachedHost struct {
	doc     hostDoc
	version docVersion
}

// maxHostsRemembered bounds touched and hostVersions (a fleet is thousands
// of hosts); a full map starts over.
const maxHostsRemembered = 1 << 17

// touchEvery bounds how often one collector writes a host's last_seen from
// event batches. Heartbeats (every 30 s) always write it; the silence
// watchdog works in minutes.
const touchEvery = 5 * time.Second

// claimTouch reports whether host's last_seen is due for a write at now,
// and if so records that it is being written.
func (s *Store) claimTouch(host string, now time.Time) bool {
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	if at, ok := s.touched[host]; ok && now.Sub(at) < touchEvery && !now.Before(at) {
		return false
	}
	if s.touched == nil || len(s.touched) >= maxHostsRemembered {
		s.touched = map[string]time.Time{}
	}
	s.touched[host] = now
	return true
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
	return s, nil
}

// backoff is the wait before retry attempt (1-based): full jitter over
// 100ms·2^attempt, at most 5s.
func backoff(attempt int) time.Duration {
	max := 100 * time.Millisecond << min(attempt, 6)
	if max > 5*time.Second {
		max = 5 * time.Second
	}
	var b [8]byte
	rand.Read(b[:])
	n := int64(0)
	for _, x := range b {
		n = n<<8 | int64(x)
	}
	if n < 0 {
		n = -n
	}
	return time.Duration(n%int64(max)) + time.Millisecond
}

// redact drops credentials from a URL for messages.
func redact(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…@" + u[i+1:]
		}
	}
	return u
}

// Namespace is the data stream namespace this store writes.
func (s *Store) Namespace() string { return s.ns }

// Stream is the data stream name of dataset in this store's namespace.
func (s *Store) Stream(dataset string) string { return "logs-" + dataset + "-" + s.ns }

func (s *Store) stateIndex(kind string) string { return "tillwatch-" + kind + "-" + s.ns }

// StateIndices lists the regular indices the store keeps (for cleanup).
func (s *Store) StateIndices() []string {
	return []string{s.stateIndex("hosts"), s.stateIndex("tokens"), s.stateIndex("deadletter"),
		s.stateIndex("commands"), s.stateIndex("command-hosts")}
}

// Client is the underlying client (tests and tools use it).
func (s *Store) Client() *es.Client { return s.c }

// esError is a non-2xx answer, with the status kept for callers to branch on.
type esError struct {
	Status int
	Type   string
	Reason string
}

func (e *esError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("status %d", e.Status)
	}
	return fmt.Sprintf("%s (%d): %s", e.Type, e.Status, e.Reason)
}

func statusOf(err error) int {
	var e *esError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// do runs req and decodes a 2xx JSON body into out (when non-nil). Non-2xx
// answers become *esError.
func (s *Store) do(ctx context.Context, req esapi.Request, out any) error {
	res, err := req.Do(ctx, s.c)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.Header.Get("X-Elastic-Product") != "Elasticsearch" {
		return fmt.Errorf("the server at that URL is not Elasticsearch (status %d, no X-Elastic-Product header)", res.StatusCode)
	}
	if res.IsError() {
		var body struct {
			Error json.RawMessage `json:"error"`
		}
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		e := &esError{Status: res.StatusCode}
		if json.Unmarshal(raw, &body) == nil && len(body.Error) > 0 {
			var detail struct{ Type, Reason string }
			if json.Unmarshal(body.Error, &detail) == nil && detail.Type != "" {
				e.Type, e.Reason = detail.Type, detail.Reason
			} else {
				e.Reason = string(body.Error)
			}
		}
		return e
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	return json.NewDecoder(res.Body).Decode(out)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v) // our own maps and structs always marshal
	return bytes.NewReader(b)
}

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

// rawRequest is a request for a path given as text (templates carry theirs).
type rawRequest struct {
	Method, Path string
	Body         io.Reader
}

// Do implements esapi.Request.
func (r rawRequest) Do(ctx context.Context, t esapi.Transport) (*esapi.Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, r.Path, r.Body)
	if err != nil {
		return nil, err
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := t.Perform(req)
	if err != nil {
		return nil, err
	}
	return &esapi.Response{StatusCode: res.StatusCode, Header: res.Header, Body: res.Body}, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var h struct {
		Status string `json:"status"`
	}
	if err := s.do(ctx, esapi.ClusterHealthRequest{Local: esapi.BoolPtr(true)}, &h); err != nil {
		return err
	}
	if h.Status == "red" {
		return errors.New("cluster health is red")
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.bi.Close(ctx)
}

type tokenDoc struct {
	Role      string     `json:"role"`
	HostID    string     `json:"host_id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revoked   bool       `json:"revoked"`
	Uses      int        `json:"uses,omitempty"`
	MaxUses   int        `json:"max_uses,omitempty"`
}

func (s *Store) putToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (tok, hash string, err error) {
	tok = store.NewToken()
	hash = store.HashToken(tok)
	doc := tokenDoc{Role: role, HostID: hostID, CreatedAt: s.now().UTC(), MaxUses: max(maxUses, 0)}
	if !expires.IsZero() {
		exp := expires.UTC()
		doc.ExpiresAt = &exp
	}
	err = s.do(ctx, esapi.CreateRequest{Index: s.stateIndex("tokens"), DocumentID: hash,
		Body: jsonBody(doc)}, nil)
	if err != nil {
		return "", "", fmt.Errorf("elasticsearch: store token: %w", err)
	}
	return tok, hash, nil
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (string, error) {
	if err := store.ValidRole(role, hostID); err != nil {
		return "", err
	}
	tok, _, err := s.putToken(ctx, role, hostID, expires, maxUses)
	if err == nil && role != api.RoleAgent {
		err = s.audit(ctx, "token-created", "creation", "", map[string]any{"tillwatch": map[string]any{"token_role": role}})
	}
	return tok, err
}

type getResult[T any] struct {
	Found       bool  `json:"found"`
	SeqNo       int64 `json:"_seq_no"`
	PrimaryTerm int64 `json:"_primary_term"`
	Source      T     `json:"_source"`
}

// get reads one document in real time (no refresh needed).
func get[T any](ctx context.Context, s *Store, index, id string) (getResult[T], error) {
	var r getResult[T]
	err := s.do(ctx, esapi.GetRequest{Index: index, DocumentID: id}, &r)
	if statusOf(err) == http.StatusNotFound {
		return getResult[T]{}, nil
	}
	return r, err
}

// Authenticate implements store.Store. An agent credential of an enrolled
// host is valid only while it is the host's current one: re-enrolment
// revokes the previous credential in the same write that records the new
// one, so no window exists in which both work.
func (s *Store) Authenticate(ctx context.Context, token string) (string, string, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return "", "", store.ErrUnknownToken
	}
	want := store.HashToken(token)
	r, err := get[tokenDoc](ctx, s, s.stateIndex("tokens"), want)
	if err != nil {
		return "", "", fmt.Errorf("elasticsearch: authenticate: %w", err)
	}
	t := r.Source
	if !r.Found || t.Revoked {
		return "", "", store.ErrUnknownToken
	}
	if t.ExpiresAt != nil && !s.now().Before(*t.ExpiresAt) {
		return "", "", &store.TokenExpiredError{At: *t.ExpiresAt}
	}
	if t.MaxUses > 0 && t.Uses >= t.MaxUses {
		return "", "", store.ErrTokenUsedUp
	}
	if t.Role == api.RoleAgent {
		h, err := get[hostDoc](ctx, s, s.stateIndex("hosts"), t.HostID)
		if err != nil {
			return "", "", fmt.Errorf("elasticsearch: authenticate: %w", err)
		}
		// A host that exists holds exactly one live credential; an agent
		// token created for a host not (yet) enrolled stands on its own.
		if h.Found && h.Source.CredentialHash != "" &&
			subtle.ConstantTimeCompare([]byte(h.Source.CredentialHash), []byte(want)) != 1 {
			return "", "", store.ErrUnknownToken
		}
	}
	return t.Role, t.HostID, nil
}

type hostDoc struct {
	HostID         string            `json:"host_id"`
	HostName       string            `json:"host_name"`
	AgentID        string            `json:"agent_id"`
	AgentVersion   string            `json:"agent_version"`
	OS             string            `json:"os"`
	Labels         map[string]string `json:"labels,omitempty"`
	Mode           string            `json:"mode"`
	Health         map[string]string `json:"health,omitempty"`
	EnrolledAt     time.Time         `json:"enrolled_at"`
	LastSeen       time.Time         `json:"last_seen"`
	SeqMax         int64             `json:"seq_max"`
	EventsLost     int64             `json:"events_lost"`
	CredentialHash string            `json:"credential_hash"`
	KeyHash        string            `json:"key_hash,omitempty"` // host-bound enrolment (store.BindKey)
	ConfigVersion  string            `json:"config_version,omitempty"`
	RulesVersion   string            `json:"rules_version,omitempty"`
}

// casRetries bounds optimistic-concurrency retries on one host document;
// contention is one host's own requests, so a few suffice.
const casRetries = 20

// updateHost applies fn to the host document under optimistic concurrency:
// read with _seq_no, write with if_seq_no, retry on conflict. fn gets
// exists=false for a host never enrolled and may return errSkip to write
// nothing.
//
// The first attempt starts from the version this collector wrote last, if
// it has one, instead of reading it back: every batch updates its host
// (sequence tracking), and that real-time GET was one more round trip and
// read per batch for the node (the ingest benchmark). The write is
// conditional either way, so a version someone else replaced
// (another collector, a partial update) only costs a conflict and a read.
func (s *Store) updateHost(ctx context.Context, hostID string, fn func(h *hostDoc, exists bool) error) error {
	index := s.stateIndex("hosts")
	for attempt := range casRetries {
		h, version, found, cached := s.cachedHost(hostID)
		if !cached || attempt > 0 {
			r, err := get[hostDoc](ctx, s, index, hostID)
			if err != nil {
				return err
			}
			h, version, found = r.Source, docVersion{r.SeqNo, r.PrimaryTerm}, r.Found
		}
		if err := fn(&h, found); err != nil {
			return err
		}
		req := esapi.IndexRequest{Index: index, DocumentID: hostID, Body: jsonBody(h)}
		if found {
			req.IfSeqNo, req.IfPrimaryTerm = esapi.IntPtr(int(version.SeqNo)), esapi.IntPtr(int(version.PrimaryTerm))
		} else {
			req.OpType = "create"
		}
		var written docVersion
		err := s.do(ctx, req, &written)
		if statusOf(err) == http.StatusConflict {
			s.forgetHost(hostID)
			s.m.conflicts.Inc()
			continue // someone else wrote the host; read again
		}
		if err != nil {
			s.forgetHost(hostID)
			return err
		}
		s.rememberHost(hostID, h, written)
		return nil
	}
	return fmt.Errorf("host %s: still conflicting after %d attempts", hostID, casRetries)
}

// cachedHost returns a copy of the host document this collector wrote
// last, and its version.
func (s *Store) cachedHost(hostID string) (h hostDoc, v docVersion, found, ok bool) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	c, ok := s.hostVersions[hostID]
	if !ok {
		return hostDoc{}, docVersion{}, false, false
	}
	h = c.doc
	h.Labels, h.Health = maps.Clone(h.Labels), maps.Clone(h.Health) // fn may change them
	return h, c.version, true, true
}

func (s *Store) rememberHost(hostID string, h hostDoc, v docVersion) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.hostVersions == nil || len(s.hostVersions) >= maxHostsRemembered {
		s.hostVersions = map[string]cachedHost{}
	}
	h.Labels, h.Health = maps.Clone(h.Labels), maps.Clone(h.Health)
	s.hostVersions[hostID] = cachedHost{doc: h, version: v}
}

func (s *Store) forgetHost(hostID string) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	delete(s.hostVersions, hostID)
}

// Enroll implements store.Store.
func (s *Store) Enroll(ctx context.Context, req api.EnrollRequest, by store.Enroller) (api.EnrollResponse, error) {
	if req.HostID == "" {
		return api.EnrollResponse{}, errors.New("elasticsearch: enroll: empty host id")
	}
	if by.TokenHash != "" {
		if err := s.useToken(ctx, by.TokenHash); err != nil {
			return api.EnrollResponse{}, err
		}
	}
	tok, hash, err := s.putToken(ctx, api.RoleAgent, req.HostID, by.CredentialExpires, 0)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	var agentID, oldHash string
	reenrol := false
	// The key check and the write are one conditional write of the host
	// document (if_seq_no), so two claims of one host cannot both pass.
	err = s.updateHost(ctx, req.HostID, func(h *hostDoc, exists bool) error {
		now := s.now().UTC()
		keyHash, err := store.BindKey(exists, h.KeyHash, req.HostKey, by)
		if err != nil {
			return err
		}
		if !exists {
			*h = hostDoc{HostID: req.HostID, AgentID: store.NewAgentID()}
		}
		h.KeyHash = keyHash
		reenrol, oldHash = exists, h.CredentialHash
		h.HostName, h.AgentVersion, h.OS, h.Labels = req.HostName, req.AgentVersion, req.OS, req.Labels
		h.EnrolledAt, h.LastSeen, h.CredentialHash = now, now, hash
		agentID = h.AgentID
		return nil
	})
	if errors.Is(err, store.ErrHostKeyMismatch) {
		// The credential made for the claim never became the host's, so
		// Authenticate refuses it; mark it for the audit trail.
		s.revokeTokenDoc(ctx, hash)
		aerr := s.auditEvent(ctx, "iam", "host-enrol-refused", "denied", "failure", req.HostID, map[string]any{
			"host":  map[string]any{"id": req.HostID, "name": req.HostName},
			"event": map[string]any{"reason": "host id is bound to another host key"},
		})
		return api.EnrollResponse{}, errors.Join(err, aerr)
	}
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("elasticsearch: enroll: %w", err)
	}
	if oldHash != "" {
		// Authenticate already refuses the old credential (it is no longer
		// the host's); marking it keeps the token index an audit trail.
		err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("tokens"), DocumentID: oldHash,
			Body: jsonBody(map[string]any{"doc": map[string]any{"revoked": true}})}, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			s.log.Warn("could not mark the previous credential revoked (it is refused anyway)", "host_id", req.HostID, "err", err)
		}
	}
	typ := "creation"
	if reenrol {
		typ = "change"
	}
	if err := s.audit(ctx, "host-enrolled", typ, req.HostID, map[string]any{
		"host":  map[string]any{"id": req.HostID, "name": req.HostName},
		"agent": map[string]any{"id": agentID, "type": "tillwatch-sensor", "version": req.AgentVersion},
	}); err != nil {
		return api.EnrollResponse{}, err
	}
	return api.EnrollResponse{AgentID: agentID, HostID: req.HostID, Credential: tok, CredentialExpires: by.CredentialExpires}, nil
}

// tokenUseRetries bounds the compare-and-swap on a token document: a
// fleet enrolling at once with one token contends on it.
const tokenUseRetries = 200

// useToken counts one use of the enrolment token with hash, written with
// if_seq_no so concurrent enrolments cannot overrun max_uses;
// ErrTokenUsedUp if none is left. (The node may run without scripting, so
// no scripted update.)
func (s *Store) useToken(ctx context.Context, hash string) error {
	index := s.stateIndex("tokens")
	for attempt := range tokenUseRetries {
		r, err := get[tokenDoc](ctx, s, index, hash)
		if err != nil {
			return fmt.Errorf("elasticsearch: count token use: %w", err)
		}
		if !r.Found || r.Source.Revoked {
			return store.ErrUnknownToken
		}
		t := r.Source
		if t.MaxUses > 0 && t.Uses >= t.MaxUses {
			return store.ErrTokenUsedUp
		}
		t.Uses++
		err = s.do(ctx, esapi.IndexRequest{Index: index, DocumentID: hash, Body: jsonBody(t),
			IfSeqNo: esapi.IntPtr(int(r.SeqNo)), IfPrimaryTerm: esapi.IntPtr(int(r.PrimaryTerm))}, nil)
		if statusOf(err) == http.StatusConflict {
			s.m.conflicts.Inc()
			// Spread the contenders out a little.
			time.Sleep(time.Duration(mrand.IntN(1+min(attempt, 20))) * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("elasticsearch: count token use: %w", err)
		}
		return nil
	}
	return fmt.Errorf("elasticsearch: count token use: still conflicting after %d attempts", tokenUseRetries)
}

func (s *Store) revokeTokenDoc(ctx context.Context, hash string) error {
	err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("tokens"), DocumentID: hash, Refresh: "true",
		Body: jsonBody(map[string]any{"doc": map[string]any{"revoked": true}})}, nil)
	if statusOf(err) == http.StatusNotFound {
		return store.ErrUnknownToken
	}
	return err
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.TokenInfo, error) {
	if err := s.refresh(ctx, s.stateIndex("tokens")); err != nil {
		return nil, fmt.Errorf("elasticsearch: tokens: %w", err)
	}
	var r struct {
		Hits struct {
			Hits []struct {
				ID     string   `json:"_id"`
				Source tokenDoc `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	err := s.do(ctx, esapi.SearchRequest{Index: []string{s.stateIndex("tokens")}, Body: jsonBody(map[string]any{
		"size": maxTokensListed, "sort": []any{map[string]any{"created_at": "asc"}},
	})}, &r)
	if statusOf(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: tokens: %w", err)
	}
	out := make([]store.TokenInfo, 0, len(r.Hits.Hits))
	for _, h := range r.Hits.Hits {
		t := h.Source
		ti := store.TokenInfo{ID: store.TokenID(h.ID), Role: t.Role, HostID: t.HostID, CreatedAt: t.CreatedAt,
			Uses: t.Uses, MaxUses: t.MaxUses, Revoked: t.Revoked}
		if t.ExpiresAt != nil {
			ti.ExpiresAt = *t.ExpiresAt
		}
		out = append(out, ti)
	}
	return out, nil
}

// maxTokensListed bounds Tokens: one search page.
const maxTokensListed = 10000

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	if len(id) != store.TokenIDLen {
		return store.ErrUnknownToken
	}
	// _id takes no prefix query: match the id against the listing.
	var r struct {
		Hits struct {
			Hits []struct {
				ID string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := s.refresh(ctx, s.stateIndex("tokens")); err != nil {
		return fmt.Errorf("elasticsearch: revoke token: %w", err)
	}
	err := s.do(ctx, esapi.SearchRequest{Index: []string{s.stateIndex("tokens")}, Body: jsonBody(map[string]any{
		"size": maxTokensListed, "_source": false, "query": map[string]any{"term": map[string]any{"revoked": false}},
	})}, &r)
	if statusOf(err) == http.StatusNotFound {
		return store.ErrUnknownToken
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: revoke token: %w", err)
	}
	revoked := false
	for _, h := range r.Hits.Hits {
		if store.TokenID(h.ID) != id {
			continue
		}
		if err := s.revokeTokenDoc(ctx, h.ID); err != nil {
			return fmt.Errorf("elasticsearch: revoke token: %w", err)
		}
		revoked = true
	}
	if !revoked {
		return store.ErrUnknownToken
	}
	return s.audit(ctx, "token-revoked", "deletion", "", map[string]any{"tillwatch": map[string]any{"token_id": id}})
}

// audit writes one ECS document to the audit data stream: enrolments and
// token creation (event.category iam); kill-switch commands and their
// acknowledgements use auditEvent (commands.go).
func (s *Store) audit(ctx context.Context, action, typ, hostID string, extra map[string]any) error {
	if err := s.auditEvent(ctx, "iam", action, typ, "success", hostID, extra); err != nil {
		return fmt.Errorf("elasticsearch: audit %s: %w", action, err)
	}
	return nil
}

// auditEvent writes one ECS audit document of event.category category; the
// caller words the error.
func (s *Store) auditEvent(ctx context.Context, category, action, typ, outcome, hostID string, extra map[string]any) error {
	now := s.now().UTC()
	doc := map[string]any{
		"@timestamp": now.Format(time.RFC3339Nano),
		"ecs":        map[string]any{"version": event.ECSVersion},
		"event": map[string]any{"id": event.NewID(), "kind": "event", "category": []string{category}, "type": []string{typ},
			"action": action, "outcome": outcome, "dataset": StreamAudit, "ingested": now.Format(time.RFC3339Nano)},
	}
	for k, v := range extra {
		if ev, ok := v.(map[string]any); ok && k == "event" {
			maps.Copy(doc["event"].(map[string]any), ev) // event.reason and the like
			continue
		}
		doc[k] = v
	}
	if _, ok := doc["host"]; !ok && hostID != "" {
		doc["host"] = map[string]any{"id": hostID}
	}
	return s.do(ctx, esapi.CreateRequest{Index: s.Stream(StreamAudit), DocumentID: doc["event"].(map[string]any)["id"].(string),
		Body: jsonBody(doc)}, nil)
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, hostID string, hb api.Heartbeat) error {
	err := s.updateHost(ctx, hostID, func(h *hostDoc, exists bool) error {
		if !exists {
			return store.ErrUnknownHost
		}
		h.LastSeen = s.now().UTC()
		h.Health = hb.Health
		if hb.AgentVersion != "" {
			h.AgentVersion = hb.AgentVersion
		}
		if hb.Mode != "" {
			h.Mode = hb.Mode
		}
		if hb.HostName != "" {
			h.HostName = hb.HostName
		}
		if hb.ConfigVersion != "" {
			h.ConfigVersion = hb.ConfigVersion
		}
		if hb.RulesVersion != "" {
			h.RulesVersion = hb.RulesVersion
		}
		return nil
	})
	if errors.Is(err, store.ErrUnknownHost) {
		return err
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: heartbeat: %w", err)
	}
	return nil
}

// TrackSequences implements store.SequenceTracker.
func (s *Store) TrackSequences(ctx context.Context, hostID string, seqs []int64) ([]store.SequenceGap, error) {
	if !slices.ContainsFunc(seqs, func(q int64) bool { return q > 0 }) {
		return nil, nil // not sequenced (an older sensor): Ingest wrote last_seen
	}
	var gaps []store.SequenceGap
	err := s.updateHost(ctx, hostID, func(h *hostDoc, exists bool) error {
		if !exists {
			return store.ErrUnknownHost
		}
		var lost int64
		gaps, h.SeqMax, lost = store.Gaps(h.SeqMax, seqs)
		h.EventsLost += lost
		if now := s.now().UTC(); now.After(h.LastSeen) {
			h.LastSeen = now // written anyway: the batch's sender is alive
		}
		return nil
	})
	if errors.Is(err, store.ErrUnknownHost) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: sequences: %w", err)
	}
	return gaps, nil
}

// touchHosts advances last_seen of the hosts that sent events and are
// marked true (the others' sequence tracking writes it). A partial update
// is atomic per document in Elasticsearch; a host never enrolled is skipped.
func (s *Store) touchHosts(ctx context.Context, hosts map[string]bool) error {
	now := s.now().UTC()
	for h, touch := range hosts {
		if !touch || !s.claimTouch(h, now) {
			continue
		}
		err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("hosts"), DocumentID: h, RetryOnConflict: esapi.IntPtr(casRetries),
			Body: jsonBody(map[string]any{"doc": map[string]any{"last_seen": now}})}, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			return fmt.Errorf("elasticsearch: mark host %s seen: %w", h, err)
		}
	}
	return nil
}

// refresh makes everything written so far searchable in indices (missing
// ones are fine: no alert stored yet).
func (s *Store) refresh(ctx context.Context, indices ...string) error {
	return s.do(ctx, esapi.IndicesRefreshRequest{Index: indices, IgnoreUnavailable: esapi.BoolPtr(true),
		AllowNoIndices: esapi.BoolPtr(true)}, nil)
}

type searchResult struct {
	Hits struct {
		Hits []struct {
			Source json.RawMessage `json:"_source"`
			Sort   []any           `json:"sort"`
		} `json:"hits"`
	} `json:"hits"`
	Aggregations json.RawMessage `json:"aggregations"`
}

func (s *Store) search(ctx context.Context, index string, body map[string]any) (searchResult, error) {
	var r searchResult
	err := s.do(ctx, esapi.SearchRequest{Index: []string{index}, Body: jsonBody(body),
		IgnoreUnavailable: esapi.BoolPtr(true), AllowNoIndices: esapi.BoolPtr(true)}, &r)
	return r, err
}

// QueryAlerts implements store.Store.
func (s *Store) QueryAlerts(ctx context.Context, f store.AlertFilter) ([]json.RawMessage, error) {
	index := s.Stream(StreamAlerts)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: query alerts: %w", err)
	}
	filter := []any{map[string]any{"term": map[string]any{"event.kind": event.KindAlert}}}
	if !f.Since.IsZero() {
		filter = append(filter, map[string]any{"range": map[string]any{"@timestamp": map[string]any{
			"gte": f.Since.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}})
	}
	if f.HostID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"host.id": f.HostID}})
	}
	if f.RuleID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"rule.id": f.RuleID}})
	}
	if !f.Until.IsZero() {
		filter = append(filter, map[string]any{"range": map[string]any{"@timestamp": map[string]any{
			"lt": f.Until.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}})
	}
	if len(f.HostIDs) > 0 {
		filter = append(filter, map[string]any{"terms": map[string]any{"host.id": f.HostIDs}})
	}
	if f.MinSeverity > 0 {
		filter = append(filter, map[string]any{"range": map[string]any{"event.severity": map[string]any{"gte": f.MinSeverity}}})
	}
	if f.EventID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"event.id": f.EventID}})
	}
	r, err := s.search(ctx, index, map[string]any{
		"size":             f.EffectiveLimit(),
		"query":            map[string]any{"bool": map[string]any{"filter": filter}},
		"sort":             []any{map[string]any{"@timestamp": "desc"}, map[string]any{"event.id": "desc"}},
		"track_total_hits": false,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: query alerts: %w", err)
	}
	out := make([]json.RawMessage, 0, len(r.Hits.Hits))
	for _, h := range r.Hits.Hits {
		out = append(out, h.Source)
	}
	return out, nil
}

// hostPage is how many hosts one search returns while listing.
const hostPage = 1000

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, true)
}

// HostList implements store.Overview: Hosts without the aggregation that
// counts every stored alert per host.
func (s *Store) HostList(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, false)
}

func (s *Store) hosts(ctx context.Context, withCounts bool) ([]api.Host, error) {
	index := s.stateIndex("hosts")
	alerts := s.Stream(StreamAlerts)
	indices := []string{index}
	if withCounts {
		indices = append(indices, alerts)
	}
	if err := s.refresh(ctx, indices...); err != nil {
		return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
	}
	counts := map[string]int64{}
	if withCounts {
		var err error
		if counts, err = s.alertCounts(ctx, alerts); err != nil {
			return nil, err
		}
	}
	out := []api.Host{}
	var after []any
	for {
		body := map[string]any{"size": hostPage, "sort": []any{map[string]any{"host_id": "asc"}}, "query": map[string]any{"match_all": map[string]any{}}}
		if after != nil {
			body["search_after"] = after
		}
		r, err := s.search(ctx, index, body)
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
		}
		for _, hit := range r.Hits.Hits {
			var d hostDoc
			if err := json.Unmarshal(hit.Source, &d); err != nil {
				return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
			}
			out = append(out, api.Host{HostID: d.HostID, HostName: d.HostName, AgentID: d.AgentID,
				AgentVersion: d.AgentVersion, OS: d.OS, Labels: nilIfEmpty(d.Labels), Mode: d.Mode,
				Health: nilIfEmpty(d.Health), EnrolledAt: d.EnrolledAt.UTC(), LastSeen: d.LastSeen.UTC(),
				AlertCount: counts[d.HostID], LastSequence: d.SeqMax, EventsLost: d.EventsLost,
				ConfigVersion: d.ConfigVersion, RulesVersion: d.RulesVersion})
			after = hit.Sort
		}
		if len(r.Hits.Hits) < hostPage {
			break
		}
	}
	// Sort in Go too: keyword order is byte order, like SQLite's; this
	// keeps the contract independent of the cluster's collation.
	sort.Slice(out, func(i, j int) bool { return out[i].HostID < out[j].HostID })
	return out, nil
}

// alertCounts counts alerts per host with a paged composite aggregation, so
// a chain of thousands of tills is counted exactly, not approximately.
func (s *Store) alertCounts(ctx context.Context, index string) (map[string]int64, error) {
	counts := map[string]int64{}
	var after map[string]any
	for {
		comp := map[string]any{"size": hostPage, "sources": []any{map[string]any{"host": map[string]any{"terms": map[string]any{"field": "host.id"}}}}}
		if after != nil {
			comp["after"] = after
		}
		r, err := s.search(ctx, index, map[string]any{"size": 0,
			"query": map[string]any{"term": map[string]any{"event.kind": event.KindAlert}},
			"aggs":  map[string]any{"hosts": map[string]any{"composite": comp}}})
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: alert counts: %w", err)
		}
		if len(r.Aggregations) == 0 {
			return counts, nil // no alerts stream yet
		}
		var aggs struct {
			Hosts struct {
				AfterKey map[string]any `json:"after_key"`
				Buckets  []struct {
					Key      struct{ Host string } `json:"key"`
					DocCount int64                 `json:"doc_count"`
				} `json:"buckets"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal(r.Aggregations, &aggs); err != nil {
			return nil, fmt.Errorf("elasticsearch: alert counts: %w", err)
		}
		for _, b := range aggs.Hosts.Buckets {
			counts[b.Key.Host] = b.DocCount
		}
		if len(aggs.Hosts.Buckets) < hostPage || aggs.Hosts.AfterKey == nil {
			return counts, nil
		}
		after = aggs.Hosts.AfterKey
	}
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
