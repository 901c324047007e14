package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// TestExecStormFromKernel runs 5,000 processes that live well under a
// millisecond and requires every exec to reach the pipeline with its
// executable and full command line. The proc connector, which must read
// both from /proc after the fact, misses about a third of them.
func TestExecStormFromKernel(t *testing.T) {
	l := newTestLayer(t, Config{})
	true_, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	marker := "storm-" + unique(t)
	const n = 5000

	src := process.New(process.Config{}, proctree.New(proctree.Options{}), slog.New(slog.DiscardHandler))
	src.SetKernelFeed(l.ProcessFeed())
	var mu sync.Mutex
	seen := map[string]bool{}
	var bad []string
	emit := func(ev event.Event) {
		p := ev.Process
		if ev.Event.Action != process.ActionExec || p == nil || !strings.Contains(p.CommandLine, marker) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		// Ancestry is what the RMM detectors walk: the parent must be
		// this test process, known from the fork record.
		if p.Executable != true_ || len(p.Args) != 3 || p.Args[1] != marker || p.Parent == nil || p.Parent.PID != int64(os.Getpid()) {
			bad = append(bad, fmt.Sprintf("%q %q parent %+v", p.Executable, p.Args, p.Parent))
			return
		}
		seen[p.Args[2]] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, emit) }()
	waitFor(t, 10*time.Second, "the source to start", func() bool { return src.Backend() != "" })
	if b := src.Backend(); b != process.BackendKernel {
		t.Fatalf("backend %q, want %q", b, process.BackendKernel)
	}

	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				if err := exec.Command(true_, marker, fmt.Sprint(i)).Run(); err != nil {
					t.Errorf("run %d: %v", i, err)
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	waitFor(t, 30*time.Second, "every exec", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen)+len(bad) >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d execs in %s: %d of %d (%.2f%%) with executable and full argv, %d incomplete",
		n, took.Round(time.Millisecond), len(seen), n, 100*float64(len(seen))/n, len(bad))
	if len(seen) != n || len(bad) > 0 {
		t.Errorf("%d of %d execs complete; incomplete: %v", len(seen), n, bad[:min(len(bad), 5)])
	}
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
