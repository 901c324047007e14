// Command consolebench measures how fast the web console answers on a large
// fleet: a SQLite store (and, with -es, an Elasticsearch one) holding
// -hosts enrolled tills in stores of ten, -alerts alerts spread over the
// last 20 hours and a few kill-switch commands with acknowledgements, served
// by the real collector server with the console mounted, over TLS on
// loopback. For each page it times what a browser's load of it asks for
// (the page, its script and style, the session, the page's data) from a
// signed-in client, and writes the "## Console page load" section of
// docs/benchmarks.md. Run with `make bench-console`.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/console"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

const heading = "## Console page load"

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose console section is replaced (\"\" prints only)")
	hosts := flag.Int("hosts", 1000, "enrolled tills")
	alerts := flag.Int("alerts", 100000, "stored alerts")
	runs := flag.Int("runs", 20, "loads of each page")
	es := flag.String("es", os.Getenv("TILLWATCH_ES_URL"), "Elasticsearch URL (\"\": SQLite only)")
	esNS := flag.String("es-namespace", "", "Elasticsearch namespace of the bench's indices (\"\": a fresh random cb<hex>)")
	keep := flag.Bool("keep", false, "keep the Elasticsearch state indices at the end, and reuse a namespace already filled (with -es-namespace)")
	withSQLite := flag.Bool("sqlite", true, "measure SQLite")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the page loads (not the fill) to this file prefix, one per store (<prefix>.<store>)")
	trace := flag.Bool("trace", false, "print, per page, each Elasticsearch request the loads made: how many per load, p50 and worst time")
	flag.Parse()
	if *trace {
		esTrace = &tracer{calls: map[string][]time.Duration{}}
	}
	if err := run(*out, *hosts, *alerts, *runs, *es, *esNS, *keep, *withSQLite, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "consolebench:", err)
		os.Exit(1)
	}
}

type pageResult struct {
	page      string
	p50, max  time.Duration
	dataBytes int
}

func run(out string, nHosts, nAlerts, runs int, esURL, esNS string, keep, withSQLite bool, cpuProfile string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "consolebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nMeasured by `make bench-console` (bench/consolebench): %d tills in stores of ten, %d alerts over the last 20 hours, "+
		"20 kill-switch commands acknowledged by 10 tills each; the real collector server with the console mounted, over TLS on loopback, "+
		"one signed-in client. A page load is every request a browser makes for it: the page, its script and style, the session, "+
		"and the page's data. %d loads per page; times from the first request to the last byte of the last answer.\n\n", heading, nHosts, nAlerts, runs)
	var backends []string
	if withSQLite {
		backends = append(backends, "sqlite")
	}
	if esURL != "" {
		backends = append(backends, "elasticsearch")
	}
	for _, backend := range backends {
		var (
			st    store.Store
			close func()
		)
		switch backend {
		case "sqlite":
			var s *sqlite.Store
			s, err = sqlite.Open(filepath.Join(dir, "tillwatch.db"), sqlite.Options{})
			st, close = s, func() { s.Close() }
		default:
			ns := esNS
			if ns == "" {
				b := make([]byte, 6)
				rand.Read(b)
				ns = fmt.Sprintf("cb%x", b)
			}
			var s *elasticsearch.Store
			var tr http.RoundTripper
			if esTrace != nil {
				tr = esTrace.wrap(http.DefaultTransport, ns)
			}
			s, err = elasticsearch.Open(ctx, elasticsearch.Options{URL: esURL, Namespace: ns, Transport: tr})
			st, close = s, func() {
				s.Close()
				if !keep {
					dropStateIndices(s)
				}
			}
			fmt.Fprintf(os.Stderr, "elasticsearch: namespace %s\n", ns)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", backend, err)
		}
		if hs, err := st.Hosts(ctx); err == nil && keep && len(hs) >= nHosts {
			fmt.Fprintf(os.Stderr, "%s: already filled (%d hosts); reusing\n", backend, len(hs))
		} else {
			fill0 := time.Now()
			if err := fill(ctx, st, nHosts, nAlerts); err != nil {
				close()
				return fmt.Errorf("%s: fill: %w", backend, err)
			}
			fmt.Fprintf(os.Stderr, "%s: filled in %s\n", backend, time.Since(fill0).Round(time.Millisecond))
		}
		load0 := loadAverage()
		res, err := profiled(cpuProfile, backend, func() ([]pageResult, error) { return measure(ctx, st, runs) })
		close()
		if err != nil {
			return fmt.Errorf("%s: %w", backend, err)
		}
		fmt.Fprintf(&b, "%s, measured %s; load average of the machine (%d CPUs) at the start and end: %s and %s.\n\n",
			backend, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), load0, loadAverage())
		fmt.Fprintf(&b, "| %s page | p50 | max | data answer |\n| --- | ---: | ---: | ---: |\n", backend)
		for _, r := range res {
			fmt.Fprintf(&b, "| %s | %s | %s | %d KiB |\n", r.page, ms(r.p50), ms(r.max), r.dataBytes/1024)
		}
		b.WriteString("\n")
	}
	b.WriteString("The stores page reads every host, one aggregate of the alert window's alerts per host (store.Overview: " +
		"a covering index on SQLite, a composite aggregation on Elasticsearch; reused for 10 s unless an alert arrives) and the newest " +
		"200 commands (collector/console/views.go); the alerts list is one indexed page of 50 (keyset paging on the timestamp); the " +
		"host page reads that host (by its id, with a count of its alerts), its newest 200 alerts, its health changes and its commands, " +
		"all at once; the stores page reads the hosts, the tally and the commands at once.\n")
	return benchdoc.Publish(out, heading, b.String())
}

// dropStateIndices deletes the bench's hosts, tokens and command indices.
// Its data streams stay: the test node cannot delete data streams (see
// docs/elasticsearch-testing.md), which is why each run has its own
// namespace.
func dropStateIndices(s *elasticsearch.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := esapi.IndicesDeleteRequest{Index: s.StateIndices(), IgnoreUnavailable: esapi.BoolPtr(true)}.Do(ctx, s.Client())
	if err != nil {
		fmt.Fprintln(os.Stderr, "consolebench: delete state indices:", err)
		return
	}
	res.Body.Close()
}

// loadAverage is the 1, 5 and 15 minute load average, or "unknown" off
// Linux: a page time means little without how busy the machine was.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}

// profiled runs f under the CPU profiler when prefix is set.
func profiled(prefix, backend string, f func() ([]pageResult, error)) ([]pageResult, error) {
	if prefix == "" {
		return f()
	}
	pf, err := os.Create(prefix + "." + backend)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return nil, err
	}
	defer pprof.StopCPUProfile()
	return f()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// fill enrols the tills, stores the alerts and issues commands that half
// the targeted tills acknowledge.
func fill(ctx context.Context, st store.Store, nHosts, nAlerts int) error {
	hostID := func(i int) string { return fmt.Sprintf("till-%04d", i) }
	for i := range nHosts {
		if _, err := st.Enroll(ctx, api.EnrollRequest{HostID: hostID(i), HostName: hostID(i), AgentVersion: "1.4.0", OS: "linux",
			Labels: map[string]string{"store": fmt.Sprintf("%04d", i/10), "region": []string{"north", "south"}[i%2]}}, store.Enroller{}); err != nil {
			return err
		}
	}
	now := time.Now().UTC()
	const batch = 1000
	for start := 0; start < nAlerts; start += batch {
		docs := make([]store.Doc, 0, batch)
		for i := start; i < min(start+batch, nAlerts); i++ {
			h := hostID(i % nHosts)
			ts := now.Add(-time.Duration(int64(20*time.Hour) * int64(nAlerts-i) / int64(nAlerts)))
			ev := alert(h, ts, i)
			raw, err := json.Marshal(&ev)
			if err != nil {
				return err
			}
			docs = append(docs, store.Doc{EventID: ev.Event.ID, Kind: event.KindAlert, Dataset: event.DatasetAlerts, HostID: h,
				Timestamp: ts, Ingested: now, RuleID: ev.Rule.ID, Ruleset: ev.Rule.Ruleset, Severity: ev.Event.Severity, JSON: raw,
				// Marks no host as seen: every batch names all the tills, and
				// the Elasticsearch store would write each one's last_seen
				// (a thousand updates a batch), which is ingest's cost, not
				// the console's, and made the fill take an hour.
				Origin: store.OriginCollector})
		}
		if _, _, err := st.Ingest(ctx, docs); err != nil {
			return err
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	svc, err := command.New(command.Options{Store: st, Key: priv, IssueRate: 1000})
	if err != nil {
		return err
	}
	cs := st.(store.CommandStore)
	for c := range 20 {
		store := fmt.Sprintf("%04d", c)
		rec, err := svc.Issue(ctx, "bench", command.Request{Action: killswitch.ActionDisableRMM,
			Targets: killswitch.Targets{Labels: map[string]string{"store": store}}, Reason: "bench"})
		if err != nil {
			return err
		}
		for i := c * 10; i < c*10+10; i++ {
			if _, err := cs.PendingCommands(ctx, hostID(i), time.Now()); err != nil {
				return err
			}
			if err := cs.AckCommand(ctx, rec.ID, hostID(i), killswitch.Result{Status: killswitch.StatusOK}, time.Now()); err != nil {
				return err
			}
		}
	}
	return nil
}

func alert(host string, ts time.Time, n int) event.Event {
	resp := &event.Response{Action: event.ActionKill, Result: event.ResultOK}
	if n%3 == 0 {
		resp = &event.Response{Action: event.ActionNone, Result: event.ResultOK}
	}
	return event.Event{
		Timestamp: ts, ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"},
			Severity: 21 + n%60, Dataset: event.DatasetAlerts},
		Rule:  &event.Rule{ID: fmt.Sprintf("TW-RMM-%04d", n%7), Name: "RMM agent started a decoder", Ruleset: event.RulesetRMM},
		Host:  event.Host{ID: host, Name: host},
		Agent: event.Agent{ID: host, Type: event.AgentType, Version: "1.4.0"},
		Process: &event.Process{PID: int64(4000 + n%1000), Name: "agent.bin", Executable: "/tmp/agent.bin", CommandLine: "/tmp/agent.bin --silent",
			Parent: &event.ParentProcess{PID: 4241, Name: "base64", CommandLine: "base64 -d /tmp/x.b64"}},
		Tillwatch: &event.Tillwatch{Mode: "enforce", Response: resp, Process: &event.ProcessContext{Ancestry: []event.Ancestor{
			{PID: 4241, Name: "base64"}, {PID: 4240, Name: "sh", CommandLine: "sh -c 'base64 -d /tmp/x.b64 > agent.bin; ./agent.bin'"},
			{PID: 4200, Name: "agentmon", Executable: "/opt/kaseya/agentmon"}}}},
	}
}

// measure serves st and loads each page runs times.
func measure(ctx context.Context, st store.Store, runs int) ([]pageResult, error) {
	con, err := console.New(console.Options{Store: st, Roles: server.RoleTable()})
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	cmds, err := command.New(command.Options{Store: st, Key: priv})
	if err != nil {
		return nil, err
	}
	srv, err := server.New(server.Options{Store: st, Commands: cmds, Console: con.Handler})
	if err != nil {
		return nil, err
	}
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()
	cl := ts.Client()
	tok, err := st.CreateToken(ctx, api.RoleResponder, "", time.Time{}, 0)
	if err != nil {
		return nil, err
	}
	cookie := ""
	req := func(method, path, body string) (int, error) {
		r, err := http.NewRequestWithContext(ctx, method, ts.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		r.Header.Set("Origin", ts.URL)
		r.Header.Set("Content-Type", "application/json")
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		resp, err := cl.Do(r)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
		}
		if setCk := resp.Header.Get("Set-Cookie"); setCk != "" && method == http.MethodPost {
			cookie = strings.SplitN(setCk, ";", 2)[0]
		}
		return int(n), err
	}
	if _, err := req(http.MethodPost, "/console/session", `{"token":"`+tok+`"}`); err != nil {
		return nil, err
	}
	if cookie == "" {
		return nil, errors.New("no session cookie")
	}
	// fresh pages are loaded as if an alert had just arrived each time:
	// the console then cannot reuse its alert tally and asks the store.
	pages := []struct {
		name, data string
		fresh      bool
	}{
		{"stores, an alert arrived before each load", "/console/data/stores", true},
		{"stores", "/console/data/stores", false},
		{"stores, one state", "/console/data/stores?state=alerting", false},
		{"alerts", "/console/data/alerts", false},
		{"alerts of one store", "/console/data/alerts?store=0042", false},
		{"alerts, severity ≥ 70", "/console/data/alerts?severity=70", false},
		{"host", "/console/data/host?id=till-0042", false},
		{"kill-switch", "/console/api/v1/commands?limit=100", false},
	}
	var out []pageResult
	for _, p := range pages {
		var times []time.Duration
		var size int
		esTrace.reset()
		for range runs {
			if p.fresh {
				con.Observe([]store.Doc{{Kind: event.KindAlert}})
			}
			t0 := time.Now()
			for _, path := range []string{"/console/", "/console/static/app.js", "/console/static/style.css", "/console/session"} {
				if _, err := req(http.MethodGet, path, ""); err != nil {
					return nil, err
				}
			}
			n, err := req(http.MethodGet, p.data, "")
			if err != nil {
				return nil, err
			}
			times = append(times, time.Since(t0))
			size = n
		}
		esTrace.report(p.name, runs)
		slices.Sort(times)
		out = append(out, pageResult{page: p.name, p50: times[len(times)/2], max: times[len(times)-1], dataBytes: size})
	}
	return out, nil
}
