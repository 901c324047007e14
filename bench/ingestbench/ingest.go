//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/sensor/identity"
	"github.com/tillwatch/tillwatch/sim/fleet"
)

// Options configure an ingest measurement.
type Options struct {
	Collector   string // the tillwatch-collector binary
	Hosts       int    // enrolled hosts sending
	Batches     int    // batches per host
	BatchSize   int    // alerts per batch (per request)
	Concurrency int    // requests in flight at once
	// ESURL, if set, also measures the collector on Elasticsearch and a
	// bare bulk indexer on the same node.
	ESURL    string
	ESRounds int // collector and bulk-indexer runs on Elasticsearch, alternating
	// ESNamespace is the collector's elasticsearch_namespace (its data
	// streams and state indices), so the benchmark does not share the
	// node's "default" with anything else; "" means DefaultESNamespace.
	ESNamespace string
	// SQLiteRounds is how many runs on SQLite, each on a new database
	// (0 means 1, negative none: only Elasticsearch); the goal is judged
	// on their median.
	SQLiteRounds int
	ProcRoot     string
	// ProfileDir, if set, makes Collector a profcollector and writes a CPU
	// profile per store there (collector-sqlite.pprof, collector-es.pprof).
	ProfileDir string
}

// Run is one ingest run of Hosts×Batches×BatchSize alerts.
type Run struct {
	Target               string
	Sent                 int64
	Accepted, Duplicates int64
	Rejected             int64
	Retries              int64             // requests answered 429/503 or failed, sent again
	Stored               int64             // alerts of this run the store holds afterwards (queried)
	Elapsed              time.Duration     // first request to the last answer
	StoredIn             time.Duration     // first request to the store holding every alert (or its last count, if it stopped short)
	Collector            benchproc.Summary // the collector process during the run
	SenderCPU            float64           // CPU seconds of this program (the senders) during the run
	ElasticsearchCPU     float64           // CPU seconds of the Elasticsearch node during the run
	// StateWrites and StateReads are the documents the collector wrote and
	// read in its state indices (hosts, tokens) during the run.
	StateWrites, StateReads float64
	Requests                int64 // requests sent, retries included
	// StoreItems is how the collector's Elasticsearch store counted the
	// bulk items of the run (tillwatch_collector_es_items_total by result).
	StoreItems []benchproc.SeriesDelta
	FirstError string
}

// Rate is alerts confirmed per second.
// Rate is alerts stored per second: the alerts the store holds over the
// time from the first request until it held them all (or gave up
// growing). A collector may confirm a batch it has only spooled to disk
// (collector/store/spooled); it is stored when the store has it.
func (r Run) Rate() float64 {
	if r.StoredIn <= 0 {
		return 0
	}
	return float64(r.Stored) / r.StoredIn.Seconds()
}

// ConfirmRate is alerts confirmed to the senders per second.
func (r Run) ConfirmRate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Accepted+r.Duplicates) / r.Elapsed.Seconds()
}

// Result is a whole measurement.
type Result struct {
	SQLite      []Run // one per round
	EnrolSQLite time.Duration
	// ES holds the Elasticsearch runs: collector and bulk indexer, one of
	// each per round; ESSkipped says why there are none.
	ESCollector, ESBulk []Run
	EnrolES             time.Duration
	ESSkipped           string
	ESVersion           string
	// ESCrash is set when the collector on Elasticsearch died during a
	// run: the panic it printed and where. The Elasticsearch runs are then
	// made again with ESConcurrency requests in flight (ESCrashAgain if it
	// died again).
	ESCrash, ESCrashAgain string
	ESConcurrency         int
}

// Measure runs the SQLite measurement, then the Elasticsearch one if
// o.ESURL is set and the node answers.
func Measure(ctx context.Context, o Options) (Result, error) {
	var res Result
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	tmp, err := os.MkdirTemp("", "ingestbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)

	if o.ESNamespace == "" {
		o.ESNamespace = DefaultESNamespace
	}
	sqliteRounds := max(o.SQLiteRounds, 1)
	if o.SQLiteRounds < 0 {
		sqliteRounds = 0
	}
	for round := range sqliteRounds {
		dir := filepath.Join(tmp, fmt.Sprintf("sqlite-%d", round))
		c, err := startCollector(ctx, o, dir, "")
		if err != nil {
			return res, err
		}
		fl, err := c.enrol(ctx, o)
		if err != nil {
			c.stop()
			return res, err
		}
		res.EnrolSQLite = fl.enrolIn
		r, err := c.send(ctx, o, fl, 0)
		r.Target = "tillwatch-collector, SQLite"
		if o.SQLiteRounds > 1 {
			r.Target += fmt.Sprintf(", run %d", round+1)
		}
		c.stop()
		// The next run must not pay for writing back this one's gigabyte.
		os.RemoveAll(dir)
		if err != nil {
			return res, err
		}
		res.SQLite = append(res.SQLite, r)
	}

	if o.ESURL == "" {
		res.ESSkipped = "no Elasticsearch URL given"
		return res, nil
	}
	if res.ESVersion, err = esVersion(o.ESURL); err != nil {
		res.ESSkipped = fmt.Sprintf("Elasticsearch at %s does not answer (%v); start it with `make es-up` (make bench does)", o.ESURL, err)
		return res, nil
	}
	res.ESConcurrency = o.Concurrency
	crash, err := esRuns(ctx, o, filepath.Join(tmp, "es"), &res)
	if err != nil || crash == nil {
		return res, err
	}
	// A crash is a finding, not a failure of the benchmark: the report says
	// it, and the comparison is made again with fewer requests in flight.
	res.ESCrash = crash.summary
	fmt.Fprintln(os.Stderr, "ingestbench: "+crash.Error())
	if o.Concurrency <= lowConcurrency {
		return res, nil
	}
	o.Concurrency = lowConcurrency
	res.ESConcurrency = o.Concurrency
	res.ESCollector, res.ESBulk = nil, nil
	fmt.Fprintf(os.Stderr, "ingestbench: Elasticsearch again with %d requests in flight\n", o.Concurrency)
	crash, err = esRuns(ctx, o, filepath.Join(tmp, "es-again"), &res)
	if crash != nil {
		res.ESCrashAgain = crash.summary
		fmt.Fprintln(os.Stderr, "ingestbench: "+crash.Error())
	}
	return res, err
}

// warmUp sends batch Batches-1 of the first warmUpHosts hosts (never
// measured: the runs start at batch Batches, whose sequence numbers follow
// on, so the collector sees no gap) through the collector, then has the
// bare indexer write the same into an index it deletes. A node just
// started is slow for its first minute or so (the JVM compiles its hot
// paths; the collector's first batches also create its data stream and
// state), and the collector, measured first, paid for all of it: 0.49x on
// a fresh node, 0.79x on the same node a run later.
func warmUp(ctx context.Context, o Options, c *collector, fl *hosts) error {
	batch := o.Batches - 1
	o.Hosts, o.Batches = min(o.Hosts, warmUpHosts), 1
	if _, err := c.send(ctx, o, fl, batch); err != nil {
		return fmt.Errorf("warm-up through the collector: %w", err)
	}
	w, err := newBulk(ctx, o.ESURL)
	if err != nil {
		return err
	}
	defer w.close()
	_, err = w.run(ctx, o, fl, batch)
	return err
}

const warmUpHosts = 200

// lowConcurrency is the requests in flight of the second attempt on
// Elasticsearch after the collector crashed.
const lowConcurrency = 16

// esRuns starts a collector on Elasticsearch with its data in dir, enrols
// the hosts and runs the rounds, each the collector then the bare bulk
// indexer with the same documents, into res. A collector that dies is
// returned as an exitError.
func esRuns(ctx context.Context, o Options, dir string, res *Result) (*exitError, error) {
	c, err := startCollector(ctx, o, dir, o.ESURL)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	fl, err := c.enrol(ctx, o)
	if err != nil {
		return nil, err
	}
	res.EnrolES = fl.enrolIn
	if err := warmUp(ctx, o, c, fl); err != nil {
		return nil, err
	}
	bulk, err := newBulk(ctx, o.ESURL)
	if err != nil {
		return nil, err
	}
	defer bulk.close()
	for round := range max(o.ESRounds, 1) {
		// Each round sends new documents (batch numbers of its own); the
		// bulk indexer writes exactly the documents the collector got.
		first := (round + 1) * o.Batches
		if err := rolloverAlerts(o.ESURL, o.ESNamespace); err != nil {
			return nil, fmt.Errorf("roll the alerts stream over: %w", err)
		}
		r, err := c.send(ctx, o, fl, first)
		r.Target = "tillwatch-collector, Elasticsearch"
		var ee *exitError
		if errors.As(err, &ee) {
			return ee, nil
		}
		if err != nil {
			return nil, err
		}
		res.ESCollector = append(res.ESCollector, r)
		b, err := bulk.run(ctx, o, fl, first)
		if err != nil {
			return nil, err
		}
		res.ESBulk = append(res.ESBulk, b)
	}
	return nil, nil
}

// exitError is a collector that ended during a run.
type exitError struct{ summary, log string }

func (e *exitError) Error() string {
	return "the collector exited during the run: " + e.summary + "; its log ends:\n" + e.log
}

// exitSummary picks the panic (or last) line of a collector log and the
// first frame of our code below it.
func exitSummary(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "panic: ") {
			continue
		}
		for j := i + 1; j+1 < len(lines); j++ {
			if strings.HasPrefix(lines[j], "github.com/tillwatch/tillwatch/") {
				at := strings.TrimSpace(lines[j+1])
				if k := strings.Index(at, "/collector/"); k >= 0 {
					at = at[k+1:]
				}
				if k := strings.LastIndex(at, " +0x"); k >= 0 {
					at = at[:k]
				}
				return l + " (at " + at + ")"
			}
		}
		return l
	}
	if len(lines) == 0 {
		return "no log"
	}
	return lines[len(lines)-1]
}

// collector is a running tillwatch-collector.
type collector struct {
	p         *benchproc.Proc
	dir, addr string
	ca, cfg   string
	bin       string
	es        string
	procRoot  string
	ns        string // Elasticsearch namespace
}

func startCollector(ctx context.Context, o Options, dir, esURL string) (*collector, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, err
	}
	c := &collector{dir: dir, addr: addr, ca: filepath.Join(dir, "data", "ca.pem"), cfg: filepath.Join(dir, "collector.yaml"),
		bin: o.Collector, es: esURL, procRoot: o.ProcRoot, ns: o.ESNamespace}
	cfg := "log: {level: warn}\n"
	if esURL != "" {
		// In the file rather than --elasticsearch so `token create` uses
		// the same store.
		cfg += "elasticsearch: " + esURL + "\nelasticsearch_namespace: " + o.ESNamespace + "\n"
	}
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	args := []string{"run", "-c", c.cfg, "--data", filepath.Join(dir, "data"), "--listen", addr}
	if o.ProfileDir != "" {
		args = append([]string{"-cpuprofile", filepath.Join(o.ProfileDir, "collector-"+filepath.Base(dir)+".pprof")}, args...)
	}
	c.p, err = benchproc.Start(o.Collector, args, filepath.Join(dir, "collector.log"))
	if err != nil {
		return nil, err
	}
	if err := c.p.WaitUntil(90*time.Second, "its listener", func() bool {
		if _, err := os.Stat(c.ca); err != nil {
			return false
		}
		cn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		cn.Close()
		return true
	}); err != nil {
		c.p.Stop(30 * time.Second)
		return nil, err
	}
	return c, ctx.Err()
}

func (c *collector) stop() { _ = c.p.Stop(30 * time.Second) }

func (c *collector) token(role string) (string, error) {
	args := []string{"token", "create", "--role", role, "-c", c.cfg, "--data", filepath.Join(c.dir, "data")}
	if role == api.RoleSensor {
		args = append(args, "--uses", "0") // one token enrols the whole simulated fleet
	}
	out, err := exec.Command(c.bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("token create: %v: %s", err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// hosts are the enrolled senders.
type hosts struct {
	prefix  string
	ids     []string
	clients []*client.Client
	tmpl    [][3][]byte // per host: its alert's JSON before the event id, up to event.sequence's value, after it
	seed    string      // 8 hex digits that make this measurement's event ids its own
	analyst string
	enrolIn time.Duration
}

// enrol enrols o.Hosts hosts (32 at a time) and opens a client for each,
// so each sends over its own connection as a till does.
func (c *collector) enrol(ctx context.Context, o Options) (*hosts, error) {
	tok, err := c.token(api.RoleSensor)
	if err != nil {
		return nil, err
	}
	analyst, err := c.token(api.RoleAnalyst)
	if err != nil {
		return nil, err
	}
	seed := make([]byte, 4)
	rand.Read(seed)
	h := &hosts{prefix: "ib" + hex.EncodeToString(seed[:3]), seed: hex.EncodeToString(seed), analyst: analyst}
	base, err := client.New(client.Config{URL: "https://" + c.addr, CAFile: c.ca, Token: tok, Timeout: time.Minute, UserAgent: "ingestbench"})
	if err != nil {
		return nil, err
	}
	h.ids = make([]string, o.Hosts)
	creds := make([]string, o.Hosts)
	errs := make([]error, o.Hosts)
	start := time.Now()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range o.Hosts {
		h.ids[i] = fmt.Sprintf("%s-%05d", h.prefix, i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := base.Enroll(ctx, api.EnrollRequest{HostID: h.ids[i], HostName: h.ids[i], AgentVersion: "ingestbench", OS: "linux", HostKey: identity.NewHostKey()})
			creds[i], errs[i] = r.Credential, err
		}()
	}
	wg.Wait()
	h.enrolIn = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	for i, cred := range creds {
		cl, err := client.New(client.Config{URL: "https://" + c.addr, CAFile: c.ca, Token: cred, Timeout: 2 * time.Minute, UserAgent: "ingestbench"})
		if err != nil {
			return nil, err
		}
		h.clients = append(h.clients, cl)
		a := fleet.Alert(h.ids[i], 0)
		// Numbered as a sensor's shipper numbers its events, so the
		// collector tracks sequences as it does for a real fleet.
		const seqMark = 987654321987
		a.Event.Sequence = seqMark
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		before, rest, ok := bytes.Cut(b, []byte(`"`+a.Event.ID+`"`))
		if !ok {
			return nil, errors.New("no event id in the alert's JSON")
		}
		mid, after, ok := bytes.Cut(rest, []byte(strconv.FormatInt(seqMark, 10)))
		if !ok {
			return nil, errors.New("no event.sequence in the alert's JSON")
		}
		h.tmpl = append(h.tmpl, [3][]byte{append(before, '"'), append([]byte{'"'}, mid...), after})
	}
	return h, nil
}

// batch is the NDJSON of host i's batch number b: the host's alert with a
// distinct event id per line and the host's next event.sequence (batch b
// holds b*size+1 to (b+1)*size), the same for the same (i, b) every time.
func (h *hosts) batch(i, b, size int) []byte {
	t := h.tmpl[i]
	out := make([]byte, 0, size*(len(t[0])+len(t[1])+33))
	for n := range size {
		out = append(out, t[0]...)
		out = fmt.Appendf(out, "%s%08x%016x", h.seed, i, b*size+n)
		out = append(out, t[1]...)
		out = strconv.AppendInt(out, int64(b*size+n+1), 10)
		out = append(out, t[2]...)
		out = append(out, '\n')
	}
	return out
}

// id is the event id of line n of host i's batch b (as batch writes it).
func (h *hosts) id(i, b, size, n int) string {
	return fmt.Sprintf("%s%08x%016x", h.seed, i, b*size+n)
}

// send has every host send batches first..first+o.Batches-1, with at most
// o.Concurrency requests in flight, and counts what the collector
// confirmed and what its store then holds.
func (c *collector) send(ctx context.Context, o Options, h *hosts, first int) (Run, error) {
	r := Run{Sent: int64(o.Hosts * o.Batches * o.BatchSize)}
	type job struct{ host, batch int }
	jobs := make(chan job)
	var acc, dup, rej, retries atomic.Int64
	var firstErr atomic.Value
	esCPU0 := esCPUSeconds(c.es)
	sw0, sr0 := esStateOps(c.es, c.ns)
	var m0 benchproc.Metrics
	if c.es != "" {
		m0, _ = c.metrics(h.analyst)
	}
	s0, err := c.stored(ctx, h)
	if err != nil {
		return r, err
	}
	self0, _ := benchproc.Read(o.ProcRoot, os.Getpid())
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	samples := make(chan []benchproc.Sample, 1)
	go func() { samples <- benchproc.Watch(sctx, o.ProcRoot, c.p.Pid(), 250*time.Millisecond) }()
	// A collector that dies ends the run at once (its senders would
	// otherwise retry against a closed port).
	rctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		for rctx.Err() == nil && !c.p.Exited() {
			time.Sleep(100 * time.Millisecond)
		}
		stopRun()
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				body := h.batch(j.host, j.batch, o.BatchSize)
				for attempt := 0; ; attempt++ {
					resp, err := h.clients[j.host].SendEvents(rctx, body)
					if err == nil {
						acc.Add(int64(resp.Accepted))
						dup.Add(int64(resp.Duplicates))
						rej.Add(int64(len(resp.Rejected)))
						if len(resp.Rejected) > 0 {
							firstErr.CompareAndSwap(nil, "rejected: "+resp.Rejected[0].Error)
						}
						break
					}
					firstErr.CompareAndSwap(nil, err.Error())
					if client.IsPermanent(err) || attempt >= 20 || rctx.Err() != nil {
						break
					}
					retries.Add(1)
					time.Sleep(time.Duration(100+attempt*100) * time.Millisecond)
				}
			}
		}()
	}
feed:
	for b := first; b < first+o.Batches; b++ {
		for i := range o.Hosts {
			select {
			case jobs <- job{i, b}:
			case <-rctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	r.Elapsed = time.Since(start)
	// Then until the store holds them all: a batch the collector spooled
	// to disk is confirmed before it is stored. On Elasticsearch the
	// collector's own count of items the node confirmed is polled (asking
	// the node to count refreshes and aggregates a growing index, which
	// would slow what is measured); the store's count is read at the end.
	count := func() (int64, error) {
		if c.es == "" || m0 == nil {
			n, err := c.stored(rctx, h)
			return n - s0, err
		}
		m, err := c.metrics(h.analyst)
		if err != nil {
			return 0, err
		}
		done := func(m benchproc.Metrics) float64 {
			return m[`tillwatch_collector_es_items_total{result="created"}`] + m[`tillwatch_collector_es_items_total{result="duplicate"}`]
		}
		return int64(done(m) - done(m0)), nil
	}
	for last, lastAt := int64(-1), time.Now(); rctx.Err() == nil; {
		n, err := count()
		if err == nil {
			r.StoredIn = time.Since(start)
			if n >= r.Sent {
				break
			}
			if n != last {
				last, lastAt = n, time.Now()
			}
		}
		if time.Since(lastAt) > 60*time.Second {
			break // no progress for a minute: report what is there
		}
		time.Sleep(500 * time.Millisecond)
	}
	stopSampling()
	r.Collector = benchproc.Summarize(<-samples)
	self1, _ := benchproc.Read(o.ProcRoot, os.Getpid())
	r.SenderCPU = float64(self1.CPUTicks-self0.CPUTicks) / benchproc.ClockTicks
	if c.es != "" {
		r.ElasticsearchCPU = esCPUSeconds(c.es) - esCPU0
		sw1, sr1 := esStateOps(c.es, c.ns)
		r.StateWrites, r.StateReads = sw1-sw0, sr1-sr0
		if m1, err := c.metrics(h.analyst); err == nil && m0 != nil {
			r.StoreItems = benchproc.Diff(m0, m1, "tillwatch_collector_es_items_total")
		}
	}
	r.Accepted, r.Duplicates, r.Rejected, r.Retries = acc.Load(), dup.Load(), rej.Load(), retries.Load()
	r.Requests = int64(o.Hosts*o.Batches) + r.Retries
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	if c.p.Exited() {
		return r, &exitError{summary: exitSummary(c.p.Log()), log: tailLines(c.p.Log(), 30)}
	}
	// The store's own count, after the CPU figures: counting refreshes
	// and aggregates the index.
	n, err := c.stored(ctx, h)
	if err != nil {
		return r, err
	}
	r.Stored = n - s0
	return r, nil
}

// metrics scrapes the collector's own metrics (an analyst may read them).
func (c *collector) metrics(token string) (benchproc.Metrics, error) {
	pem, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "https://"+c.addr+api.PathMetrics, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("collector metrics: %s", resp.Status)
	}
	return benchproc.ParseMetrics(string(b))
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// stored sums the alert counts the collector reports for this run's hosts.
func (c *collector) stored(ctx context.Context, h *hosts) (int64, error) {
	cl, err := client.New(client.Config{URL: "https://" + c.addr, CAFile: c.ca, Token: h.analyst, Timeout: 5 * time.Minute})
	if err != nil {
		return 0, err
	}
	all, err := cl.Hosts(ctx)
	if err != nil {
		return 0, fmt.Errorf("hosts: %w", err)
	}
	var n int64
	for _, x := range all {
		if strings.HasPrefix(x.HostID, h.prefix+"-") {
			n += x.AlertCount
		}
	}
	return n, nil
}
