//go:build linux

package benchproc

import (
	"os"
	"testing"
	"time"
)

func TestReadSelf(t *testing.T) {
	t.Parallel()
	s, err := Read("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.RSSAnon <= 0 || s.Threads <= 0 {
		t.Fatalf("implausible sample %+v", s)
	}
	if _, err := Read("/proc", 1<<30); err == nil {
		t.Fatal("a pid that cannot exist was read")
	}
}

func TestCPUTicks(t *testing.T) {
	t.Parallel()
	// A command name with spaces and a ')' must not shift the fields.
	line := "4242 (we ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 100 1000 10\n"
	got, err := cpuTicks([]byte(line))
	if err != nil || got != 22 {
		t.Fatalf("cpuTicks = %d, %v; want 22", got, err)
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	ss := []Sample{
		{At: t0, RSS: 10 << 20, CPUTicks: 100},
		{At: t0.Add(time.Second), RSS: 30 << 20, CPUTicks: 120},
		{At: t0.Add(2 * time.Second), RSS: 20 << 20, CPUTicks: 150},
	}
	s := Summarize(ss)
	if s.MedianRSS != 20<<20 || s.MaxRSS != 30<<20 || s.Window != 2*time.Second {
		t.Fatalf("summary %+v", s)
	}
	// 50 ticks = 0.5 s of CPU over 2 s: 25% of one core.
	if s.CPUSeconds != 0.5 || s.CPUPercent != 25 {
		t.Fatalf("cpu %v s, %v%%", s.CPUSeconds, s.CPUPercent)
	}
}

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	m, err := ParseMetrics(`# HELP x y
tillwatch_events_dropped_total{queue="detector/yara"} 3
tillwatch_events_dropped_total{queue="sink"} 1
tillwatch_yara_jobs_dropped_total 2e+00
go_goroutines 12 1700000000000
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("tillwatch_events_dropped_total"); got != 4 {
		t.Fatalf("sum = %v", got)
	}
	if m["tillwatch_yara_jobs_dropped_total"] != 2 || m["go_goroutines"] != 12 {
		t.Fatalf("metrics %v", m)
	}
	before := Metrics{`tillwatch_events_dropped_total{queue="sink"}`: 1}
	d := Diff(before, m, "tillwatch_events_dropped_total")
	if len(d) != 1 || d[0].Delta != 3 {
		t.Fatalf("diff %+v", d)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	if Median([]int64{5, 1, 3}) != 3 || Median([]float64{1, 2, 3, 4}) != 2.5 || Median([]int{}) != 0 {
		t.Fatal("median")
	}
}
