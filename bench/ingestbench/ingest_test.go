//go:build linux

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// TestShortRun keeps the benchmark from rotting: the real collector, ten
// hosts, two small batches each; Elasticsearch too when TILLWATCH_ES_URL
// names a node (make test sets it).
func TestShortRun(t *testing.T) {
	bin := t.TempDir()
	if err := benchproc.Build(bin, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch-collector"); err != nil {
		t.Fatal(err)
	}
	o := Options{Collector: filepath.Join(bin, "tillwatch-collector"), Hosts: 10, Batches: 2, BatchSize: 50, Concurrency: 4,
		ESURL: os.Getenv("TILLWATCH_ES_URL"), ESRounds: 1}
	r, err := Measure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	runs := append([]Run(nil), r.SQLite...)
	if o.ESURL == "" {
		t.Log("TILLWATCH_ES_URL not set: the Elasticsearch part is not tested (make test sets it)")
	} else {
		if r.ESSkipped != "" || len(r.ESCollector) != 1 || len(r.ESBulk) != 1 {
			t.Fatalf("Elasticsearch part: skipped %q, %d collector and %d bulk runs", r.ESSkipped, len(r.ESCollector), len(r.ESBulk))
		}
		runs = append(runs, r.ESCollector[0], r.ESBulk[0])
	}
	for _, x := range runs {
		t.Logf("%s: %d sent, %d confirmed, %d stored, %.0f alerts/s", x.Target, x.Sent, x.Accepted+x.Duplicates, x.Stored, x.Rate())
		if x.Sent != 1000 || !complete(x) || x.Rate() <= 0 {
			t.Fatalf("%s: %+v", x.Target, x)
		}
	}
	if s := report(r, o, "?", "?"); !strings.HasPrefix(s, heading+"\n") || !strings.Contains(s, "| tillwatch-collector, SQLite |") {
		t.Fatalf("report:\n%s", s)
	}
}

func TestExitSummary(t *testing.T) {
	t.Parallel()
	log := `time=2026-11-30T11:06:56.458Z level=WARN msg="bulk request failed" err="context deadline exceeded"
panic: sync: negative WaitGroup counter

goroutine 32 [running]:
sync.(*WaitGroup).Add(0x2a40fee9b050, 0xffffffffffffffff)
	/usr/local/go/src/sync/waitgroup.go:118 +0x23a
github.com/tillwatch/tillwatch/collector/store/elasticsearch.(*Store).bulk.func1({_, _}, ...)
	/work/main/collector/store/elasticsearch/ingest.go:169 +0xe5
`
	want := "panic: sync: negative WaitGroup counter (at collector/store/elasticsearch/ingest.go:169)"
	if got := exitSummary(log); got != want {
		t.Fatalf("exitSummary = %q, want %q", got, want)
	}
	if got := exitSummary("level=ERROR msg=\"store gone\"\n"); got != `level=ERROR msg="store gone"` {
		t.Fatalf("exitSummary without a panic = %q", got)
	}
}
