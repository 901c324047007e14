//go:build linux

// Command ingestbench measures how many alerts per second the real
// tillwatch-collector stores: 1,000 enrolled hosts send batches of 500
// alerts through collector/client (gzip, one TLS connection per host),
// with bounded concurrency, into SQLite and then, when the node answers,
// into Elasticsearch side by side with a bare esutil.BulkIndexer writing
// the same documents to the same node. It checks that the collector
// confirmed every alert and that the store holds every one, and writes the
// "## Collector ingest" section of docs/benchmarks.md. Run with
// `make bench-ingest` (Elasticsearch: `make es-up` first).
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

const heading = "## Collector ingest"

// Goals: alerts per second into SQLite, and the collector's rate into
// Elasticsearch against a bare bulk indexer's.
const (
	goalSQLite  = 50000
	goalESRatio = 0.8
)

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose ingest section is replaced (\"\" prints only)")
	hostsN := flag.Int("hosts", 1000, "enrolled hosts sending")
	batches := flag.Int("batches", 2, "batches per host (per run)")
	size := flag.Int("batch", 500, "alerts per batch (one request)")
	conc := flag.Int("concurrency", 64, "requests in flight at once (64: the collector admits that many batches at once)")
	esURL := flag.String("es", "", "Elasticsearch URL (make bench-ingest passes http://127.0.0.1:9200); empty skips that part")
	esRounds := flag.Int("es-rounds", 3, "collector and bulk-indexer runs on Elasticsearch, alternating; the ratio is of their medians")
	sqliteRounds := flag.Int("sqlite-rounds", 3, "runs on SQLite, each on a new database; the goal is judged on their median (-1: none, Elasticsearch only)")
	esNamespace := flag.String("es-namespace", DefaultESNamespace, "the collector's elasticsearch_namespace on the node")
	collectorBin := flag.String("collector", "", "a tillwatch-collector binary (default: go build ./cmd/tillwatch-collector into a temp dir)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this program (the senders) to FILE")
	profile := flag.String("profile", "", "diagnose instead: run bench/profcollector (the collector with pprof), write its CPU profiles into DIR, leave the docs alone")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := Options{Collector: *collectorBin, Hosts: *hostsN, Batches: *batches, BatchSize: *size, Concurrency: *conc, ESURL: *esURL, ESRounds: *esRounds, SQLiteRounds: *sqliteRounds, ESNamespace: *esNamespace}
	if *profile != "" && *collectorBin == "" {
		var err error
		if o.Collector, err = benchproc.ProfCollector(*profile); err != nil {
			fmt.Fprintln(os.Stderr, "ingestbench: "+err.Error())
			os.Exit(1)
		}
	}
	if *profile != "" {
		// With -collector too, that binary is a bench/profcollector built
		// by hand (e.g. from another commit, to profile before and after).
		o.ProfileDir, _ = filepath.Abs(*profile)
		*out = ""
	}
	if err := run(ctx, *out, o, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "ingestbench: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, out string, o Options, cpuprofile string) error {
	if o.Collector == "" {
		path, cleanup, err := benchproc.BuildCollector()
		if err != nil {
			return err
		}
		defer cleanup()
		o.Collector = path
	}
	if cpuprofile != "" {
		stop, err := benchproc.StartCPUProfile(cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	load0 := benchproc.LoadAvg("/proc")
	r, err := Measure(ctx, o)
	if err != nil {
		return err
	}
	if r.ESSkipped != "" {
		fmt.Fprintln(os.Stderr, "ingestbench: Elasticsearch part skipped: "+r.ESSkipped)
	}
	section := report(r, o, load0, benchproc.LoadAvg("/proc"))
	return benchdoc.Publish(out, heading, section)
}

func row(r Run) string {
	coll, rss := "-", "-"
	if r.Collector.Samples > 0 {
		coll = fmt.Sprintf("%.1f s (%.0f%%)", r.Collector.CPUSeconds, r.Collector.CPUPercent)
		rss = benchproc.MiB(r.Collector.MaxRSS)
	}
	es := "-"
	if r.ElasticsearchCPU > 0 {
		es = fmt.Sprintf("%.1f s", r.ElasticsearchCPU)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %d | %s (%s/s) | %s | %s | **%s** | %s | %s | %.1f s | %s |\n", r.Target, benchproc.Commas(r.Sent),
		benchproc.Commas(r.Accepted+r.Duplicates), benchproc.Commas(r.Duplicates), benchproc.Commas(r.Rejected), r.Retries,
		r.Elapsed.Round(10*time.Millisecond), benchproc.Commas(int64(r.ConfirmRate())), benchproc.Commas(r.Stored),
		r.StoredIn.Round(10*time.Millisecond), benchproc.Commas(int64(r.Rate())), coll, rss, r.SenderCPU, es)
}

// complete says whether every alert sent was confirmed and stored.
func complete(r Run) bool {
	return r.Accepted+r.Duplicates == r.Sent && r.Stored == r.Sent && r.Rejected == 0
}

func report(r Result, o Options, load0, load1 string) string {
	var w strings.Builder
	cmd := "go run ./bench/ingestbench"
	if o.ESURL != "" {
		cmd += " -es " + o.ESURL
		if o.ESNamespace != DefaultESNamespace {
			cmd += " -es-namespace " + o.ESNamespace
		}
	}
	for _, f := range []struct {
		name    string
		v, def  int
		enabled bool
	}{{"hosts", o.Hosts, 1000, true}, {"batches", o.Batches, 2, true}, {"batch", o.BatchSize, 500, true},
		{"concurrency", o.Concurrency, 64, true}, {"es-rounds", o.ESRounds, 3, o.ESURL != ""},
		{"sqlite-rounds", o.SQLiteRounds, 3, true}} {
		if f.enabled && f.v != f.def {
			cmd += fmt.Sprintf(" -%s %d", f.name, f.v)
		}
	}
	per := int64(o.Hosts * o.Batches * o.BatchSize)
	fmt.Fprintf(&w, `%s

Measured by `+"`make bench-ingest`"+` (bench/ingestbench, `+"`%s`"+`) on %s: %s;
shared with other work while measured (load average %s before, %s after). The collector is the real
tillwatch-collector binary (`+"`go build ./cmd/tillwatch-collector`"+`, default configuration but `+"`log.level: warn`"+`) on
127.0.0.1; the senders run in the benchmark's process on the same 2 CPUs (their CPU time is in the table).

%s hosts enrol with a sensor token (%s on SQLite), then each sends %d batches of %d alerts (%s alerts per run)
through collector/client `+"`SendEvents`"+` (gzip, one TLS connection per host, as a till's shipper), %d requests in
flight at once (the collector admits 64 batches at once and answers 429 beyond), batches in host order. The alert is sim/fleet's synthetic TW-SIM-0001 (about 700 bytes of ECS
JSON), each line with an event.id of its own and the host's next event.sequence, as a sensor's shipper numbers its
events (so the collector tracks sequences as for a real fleet: one more write of the host per batch). **confirmed** = accepted + duplicates in the collector's answers (a
collector may confirm a batch it has only written to its disk spool, collector/store/spooled, while the store is down);
**stored** = the sum of the hosts' alert counts the collector reports afterwards (`+"`GET /api/v1/hosts`"+`, the store's own
count); **all stored after** = from the first request until the store held every alert, polled every 500 ms after the
last answer (SQLite: that count; Elasticsearch: the collector's count of items the node confirmed,
`+"`tillwatch_collector_es_items_total`"+` created + duplicate, so that polling does not load the node); **alerts/s
stored** = alerts over that time. Collector CPU (and %% of one core over that time) and its largest RSS are from /proc,
sampled every 250 ms.

| target | alerts sent | confirmed | of which duplicates | rejected | retried requests | all confirmed after | stored | all stored after | alerts/s stored | collector CPU | collector RSS max | sender CPU | Elasticsearch CPU |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
`, heading, cmd, time.Now().UTC().Format("2006-01-02"), benchproc.Machine(), load0, load1,
		benchproc.Commas(int64(o.Hosts)), r.EnrolSQLite.Round(10*time.Millisecond), o.Batches, o.BatchSize, benchproc.Commas(per), o.Concurrency)
	for _, run := range r.SQLite {
		w.WriteString(row(run))
	}
	for i := range r.ESCollector {
		if r.ESConcurrency != o.Concurrency {
			r.ESCollector[i].Target += fmt.Sprintf(" (%d in flight)", r.ESConcurrency)
		}
		w.WriteString(row(r.ESCollector[i]))
		w.WriteString(row(r.ESBulk[i]))
	}
	// The median run by rate: the goal, and the machine's load, are read
	// from it.
	runs := slices.SortedFunc(slices.Values(r.SQLite), func(a, b Run) int { return cmp.Compare(a.Rate(), b.Rate()) })
	if len(runs) == 0 {
		runs = []Run{{}} // -sqlite-rounds -1: no SQLite figures
	}
	sq := runs[len(runs)/2]
	all := true
	for _, run := range r.SQLite {
		all = all && complete(run)
	}
	v := "met"
	if rate := sq.Rate(); rate < goalSQLite {
		v = fmt.Sprintf("**missed** (%s alerts/s, %.0f%% of the goal)", benchproc.Commas(int64(rate)), 100*rate/goalSQLite)
	}
	fmt.Fprintf(&w, "\nGoal >= 50,000 alerts/s into SQLite (median of %d runs, each on a new database: %s alerts/s): %s. Every alert confirmed and stored exactly once: %s. In the median run the collector and the senders kept the machine's %d CPUs %.0f%% busy.\n",
		len(runs), benchproc.Commas(int64(sq.Rate())), v, yesNo(all), runtime.NumCPU(), 100*(sq.Collector.CPUSeconds+sq.SenderCPU)/(max(sq.StoredIn.Seconds(), 1e-9)*float64(runtime.NumCPU())))
	for _, run := range r.SQLite {
		if run.FirstError != "" {
			fmt.Fprintf(&w, "First error seen (the request was retried): `%s`.\n", clip(run.FirstError, 300))
			break
		}
	}
	if r.ESSkipped != "" {
		fmt.Fprintf(&w, "\nElasticsearch: **not measured**: %s.\n", r.ESSkipped)
		return w.String()
	}
	if r.ESCrash != "" && (r.ESCrashAgain != "" || len(r.ESCollector) == 0) {
		fmt.Fprintf(&w, "\nElasticsearch %s at %s: **the collector crashed** with %d requests in flight (`%s`)", r.ESVersion, o.ESURL, o.Concurrency, r.ESCrash)
		if r.ESCrashAgain != "" {
			fmt.Fprintf(&w, " and again with %d (`%s`)", r.ESConcurrency, r.ESCrashAgain)
		}
		w.WriteString(": there is no Elasticsearch rate and no ratio against the bare bulk indexer (goal >= 0.8x).\n")
		return w.String()
	}
	crash := ""
	if r.ESCrash != "" {
		crash = fmt.Sprintf("\n**The collector crashed** on Elasticsearch with %d requests in flight: `%s`. The Elasticsearch rows above were measured again, with %d in flight.\n",
			o.Concurrency, r.ESCrash, r.ESConcurrency)
	}
	var coll, bulk []float64
	okC, okB := true, true
	for i := range r.ESCollector {
		coll = append(coll, r.ESCollector[i].Rate())
		bulk = append(bulk, r.ESBulk[i].Rate())
		okC = okC && complete(r.ESCollector[i])
		okB = okB && complete(r.ESBulk[i])
	}
	ratio := benchproc.Median(coll) / benchproc.Median(bulk)
	v = "met"
	if ratio < goalESRatio {
		v = fmt.Sprintf("**missed** by %.2f", goalESRatio-ratio)
	}
	fmt.Fprintf(&w, `
Elasticsearch %s at %s (the test node of `+"`make es-up`"+`: one JVM with a 512 MiB heap on the same 2 CPUs). The
collector runs with `+"`elasticsearch: %s`"+` and `+"`elasticsearch_namespace: %s`"+` and stores into its alerts data stream
`+"`%s`"+`, rolled over before each run so that it writes into an empty backing index as the
baseline does (`+"`create`"+` looks each _id up in the write index); enrolling the hosts took %s. The baseline is a bare
esutil.BulkIndexer in the benchmark's process, with the collector's indexer settings (%d workers, %d MiB flush, %s
flush interval, `+"`create`"+` with event.id as _id), writing exactly the same documents (the same lines, the same ids) to the
same node, into a throwaway index with the alerts stream's mappings (simulated from the collector's template;
deleted afterwards: this node cannot delete data streams). Before the first round 100,000 other documents go through
the collector and through the bare indexer (into an index it deletes), so that neither side pays for a node just
started. %d round(s), collector first.

Ratio collector / bare bulk indexer (median alerts/s stored): **%.2fx** (goal >= 0.8x): %s. The collector confirmed and stored every alert exactly once: %s; the bare indexer stored every document: %s (its failures are in the rejected column).
%s
`, r.ESVersion, o.ESURL, o.ESURL, o.ESNamespace, alertsStream(o.ESNamespace), r.EnrolES.Round(10*time.Millisecond), bulkWorkers, bulkFlushBytes>>20, bulkFlushEvery,
		len(r.ESCollector), ratio, v, yesNo(okC), yesNo(okB), crash)
	for i := range r.ESCollector {
		c, b := r.ESCollector[i], r.ESBulk[i]
		busy := func(x Run) float64 {
			return 100 * (x.Collector.CPUSeconds + x.ElasticsearchCPU + x.SenderCPU) / (max(x.StoredIn.Seconds(), 1e-9) * float64(runtime.NumCPU()))
		}
		fmt.Fprintf(&w, "Round %d: the processes measured kept the machine's %d CPUs %.0f%% busy during the collector's run and %.0f%% during the bare indexer's. Elasticsearch's CPU per 100,000 alerts: %.1f s for the collector's, %.1f s for the bare indexer's. Besides the alerts, each of the collector's %d requests made it write %.1f and read %.1f documents of the collector's state indices (tillwatch-hosts-*, tillwatch-tokens-*: the credential check, last_seen, sequence tracking), each a round trip of its own.\n",
			i+1, runtime.NumCPU(), busy(c), busy(b),
			c.ElasticsearchCPU*1e5/float64(max(c.Sent, 1)), b.ElasticsearchCPU*1e5/float64(max(b.Sent, 1)),
			c.Requests, c.StateWrites/float64(max(c.Requests, 1)), c.StateReads/float64(max(c.Requests, 1)))
		if len(c.StoreItems) > 0 {
			var items []string
			for _, d := range c.StoreItems {
				res, _, _ := strings.Cut(strings.TrimPrefix(d.Series, `tillwatch_collector_es_items_total{result="`), `"`)
				items = append(items, fmt.Sprintf("%s %s", res, benchproc.Commas(int64(d.Delta))))
			}
			fmt.Fprintf(&w, "The collector's store counted its bulk items (`tillwatch_collector_es_items_total`): %s.\n", strings.Join(items, ", "))
		}
	}
	for _, x := range append(append([]Run{}, r.ESCollector...), r.ESBulk...) {
		if x.FirstError != "" {
			fmt.Fprintf(&w, "First error seen by %s: `%s`.\n", x.Target, clip(x.FirstError, 300))
			break
		}
	}
	return w.String()
}

// clip shortens s to n bytes (on a rune boundary) with an ellipsis.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + " …"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}
