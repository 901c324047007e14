package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
)

// TestElasticsearchOutage makes Elasticsearch unreachable under a running
// fleet: a real collector on the Elasticsearch store reaches the cluster
// through a loopback TCP proxy; while 50 simulated sensors raise alerts the
// proxy is cut (listener and every open connection closed) for several
// seconds, then restored. During the outage the collector keeps accepting
// into its disk spool; every alert must end up in Elasticsearch exactly
// once, and the sensors' queues and the collector's spool must drain.
func TestElasticsearchOutage(t *testing.T) {
	target := os.Getenv("TILLWATCH_ES_URL")
	if target == "" {
		t.Skip("TILLWATCH_ES_URL not set: run `make es-up` and export TILLWATCH_ES_URL=http://127.0.0.1:9200 (make test does both)")
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		t.Fatalf("TILLWATCH_ES_URL %q: %v", target, err)
	}
	p := startTCPProxy(t, u.Host)
	viaProxy := *u
	viaProxy.Host = p.Addr()

	c := collectortest.StartElasticsearch(t, elasticsearch.Options{URL: viaProxy.String()})
	// Cleanups run last-first: should the test stop during the outage, the
	// cluster comes back before the collector is stopped and cleaned up.
	t.Cleanup(func() { p.Restore() })
	t.Logf("collector on Elasticsearch namespace %s via proxy %s -> %s", c.Store.Namespace(), p.Addr(), u.Host)

	sensors, perSensor := 50, 4
	var (
		sendsMu sync.Mutex
		sends   []Send
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := Start(ctx, Options{
		URL: c.URL, CAFile: c.CAFile, EnrollToken: c.Token(api.RoleSensor),
		Sensors: sensors, HostPrefix: "esout", AlertInterval: 2 * time.Second, AlertsPerSensor: perSensor,
		HeartbeatInterval: 30 * time.Second, MaxBackoff: 4 * time.Second,
		OnSend: func(s Send) { sendsMu.Lock(); sends = append(sends, s); sendsMu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); f.Wait() }()
	if st := f.Stats(); st.Enrolled != int64(sensors) {
		t.Fatalf("enrolled %d of %d (%d errors)", st.Enrolled, sensors, st.EnrollErrors)
	}
	ingestRoute := "POST " + api.PathEvents
	_, unavail0 := ingestAnswers(t, c.Registry, ingestRoute)

	time.Sleep(2 * time.Second) // alerts are flowing
	before := f.Stats()
	p.Cut()
	down := time.Now()
	time.Sleep(6 * time.Second) // the fleet keeps raising alerts; Elasticsearch is unreachable
	during := f.Stats()
	if err := p.Restore(); err != nil {
		t.Fatalf("restore proxy: %v", err)
	}
	up := time.Now()

	// A batch the collector took wholly inside the outage went to its disk
	// spool (fsynced before the answer), so it is answered 200: the
	// collector keeps accepting and confirms only what is durable.
	var inside, inside200 int
	sendsMu.Lock()
	for _, s := range sends {
		if s.Start.Before(down) || s.End.After(up) {
			continue
		}
		inside++
		switch s.Status {
		case 200:
			inside200++
		case 503:
			t.Errorf("sensor %s: batch sent %s into the outage was refused (503) although the spool had room: %v",
				s.Host, s.Start.Sub(down).Round(time.Millisecond), s.Err)
		}
	}
	sendsMu.Unlock()
	t.Logf("Elasticsearch unreachable for %s; alerts raised before the cut %d, by its end %d; %d batches sent and answered within the outage, %d of them 200 (spooled)",
		up.Sub(down).Round(time.Millisecond), before.AlertsRaised, during.AlertsRaised, inside, inside200)
	if during.AlertsRaised == before.AlertsRaised {
		t.Errorf("no alert was raised during the outage: the test did not test anything")
	}
	if c.Spool.Depth() == 0 && inside200 > 0 {
		t.Logf("spool already drained at the restore")
	}

	want := int64(sensors * perSensor)
	deadline := time.Now().Add(45 * time.Second)
	var st Stats
	for {
		st = f.Stats()
		if st.AlertsRaised == want && st.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet did not drain within 45s of the restore: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("drained %s after the restore: %+v", time.Since(up).Round(time.Millisecond), st)
	// The collector's own spool replays into Elasticsearch with backoff.
	for c.Spool.Depth() > 0 {
		if time.Now().After(deadline.Add(45 * time.Second)) {
			t.Fatalf("the collector's spool still holds %d batches", c.Spool.Depth())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Exactly once, as the store reports it (refreshes, then counts per host)...
	qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer qcancel()
	hosts, err := c.Store.Hosts(qctx)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for _, h := range hosts {
		if !strings.HasPrefix(h.HostID, "esout-") {
			continue
		}
		stored += h.AlertCount
		if h.AlertCount != int64(perSensor) {
			docs, _ := c.Store.QueryAlerts(qctx, store.AlertFilter{HostID: h.HostID})
			var rules []string
			for _, d := range docs {
				var a struct {
					Rule struct{ ID string } `json:"rule"`
				}
				json.Unmarshal(d, &a)
				rules = append(rules, a.Rule.ID)
			}
			t.Errorf("host %s has %d alerts stored, want %d: %v", h.HostID, h.AlertCount, perSensor, rules)
		}
	}
	if stored != want {
		t.Errorf("store counts %d alerts, want exactly %d", stored, want)
	}
	// ...and as Elasticsearch itself counts the alerts data stream.
	if n := countAlerts(t, qctx, c.Store); n != want {
		t.Errorf("the alerts data stream holds %d simulated alerts, want exactly %d", n, want)
	}
	if got := counterValue(t, c.Registry, "tillwatch_collector_store_spooled_events_total"); got == 0 {
		t.Errorf("the collector spooled no event during the outage")
	}
	if ok, _ := ingestAnswers(t, c.Registry, ingestRoute); ok == 0 {
		t.Errorf("the collector's metrics count no event batch answered 200")
	}
	_ = unavail0
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// ingestAnswers returns how many event batches the collector has answered
// 200 and 503 so far, from its http_requests_total. (Gathering also runs
// the hosts gauge, which asks the store: do not call it during an outage.)
func ingestAnswers(t *testing.T, reg *prometheus.Registry, route string) (ok, unavailable float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasSuffix(mf.GetName(), "http_requests_total") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var r, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					r = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			if r != route {
				continue
			}
			switch code {
			case "200":
				ok += m.GetCounter().GetValue()
			case "503":
				unavailable += m.GetCounter().GetValue()
			}
		}
	}
	return ok, unavailable
}

// countAlerts refreshes the alerts data stream and counts the simulated
// alerts in it.
func countAlerts(t *testing.T, ctx context.Context, s *elasticsearch.Store) int64 {
	t.Helper()
	es := s.Client()
	index := s.Stream(elasticsearch.StreamAlerts)
	res, err := es.Indices.Refresh(es.Indices.Refresh.WithContext(ctx), es.Indices.Refresh.WithIndex(index))
	if err != nil {
		t.Fatalf("refresh %s: %v", index, err)
	}
	res.Body.Close()
	if res.IsError() {
		t.Fatalf("refresh %s: %s", index, res.Status())
	}
	res, err = es.Count(es.Count.WithContext(ctx), es.Count.WithIndex(index),
		es.Count.WithBody(strings.NewReader(`{"query":{"term":{"rule.id":"TW-SIM-0001"}}}`)))
	if err != nil {
		t.Fatalf("count %s: %v", index, err)
	}
	defer res.Body.Close()
	if res.IsError() {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("count %s: %s %s", index, res.Status(), b)
	}
	var out struct {
		Count int64 `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("count %s: %v", index, err)
	}
	return out.Count
}

// tcpProxy forwards loopback TCP connections to a target. Cut makes the
// target unreachable as a dead node is: the listener is closed (new
// connections are refused) and every open connection is closed. Restore
// listens again on the same address.
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *tcpProxy) Addr() string { return p.addr }

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return // closed by Cut or close
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(in)
			}()
		}
	}()
}

// track registers c as open, or reports false if the proxy is cut.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) forward(in net.Conn) {
	defer in.Close()
	if !p.track(in) {
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer out.Close()
	if !p.track(out) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() { io.Copy(in, out); done <- struct{}{} }()
	<-done // either side ended: end both
	in.Close()
	out.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

// Cut closes the listener and every open connection.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore listens on the proxy's address again (a no-op if it is not cut).
func (p *tcpProxy) Restore() error {
	p.mu.Lock()
	cut := p.ln == nil
	p.mu.Unlock()
	if !cut {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			p.serve(ln)
			return nil
		}
		if time.Now().After(deadline) || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *tcpProxy) close() {
	p.Cut()
	p.wg.Wait()
}
