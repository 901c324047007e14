//go:build cgo

package yara

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
)

const marker = "tillwatch-test-marker-7f3a"

// healthLog records health reports.
type healthLog struct {
	mu   sync.Mutex
	seen []string
}

func (h *healthLog) report(c, s, r string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, c+" "+s+" "+r)
}

func (h *healthLog) has(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.seen {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestBuiltinRules is what CI checks for rule authors: the built-in
// rules lint clean and every positive/negative sample behaves.
func TestBuiltinRules(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "rules", "yara")
	ps, err := Lint(dir)
	if err != nil || len(ps) > 0 {
		t.Fatalf("lint: %v %v", err, ps)
	}
	ps, err = TestSamples(dir)
	if err != nil || len(ps) > 0 {
		t.Fatalf("samples: %v %v", err, ps)
	}
	// The embedded set is the same set.
	r, err := Load(rules.Builtin, "yara", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() < 5 {
		t.Fatalf("built-in set has %d rules, want >= 5", r.Len())
	}
}

func TestLintProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir, want string
	}{
		{"testdata/bad", `testdata/bad/syntax.yar:7: undefined string "$b"`},
		{"testdata/nometa", "testdata/nometa/nometa.yar:1: rule No_Meta: meta id is required"},
		{"testdata/nometa", "nometa.yar:1: rule No_Meta: meta severity"},
		{"testdata/good", "no positive samples"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			ps, err := Lint(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			more, err := TestSamples(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for _, p := range append(ps, more...) {
				all = append(all, p.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), tc.want) {
				t.Fatalf("want a problem containing %q, got %q", tc.want, all)
			}
		})
	}
}

func newEngine(t *testing.T, o Options) (*Engine, *healthLog) {
	t.Helper()
	h := &healthLog{}
	o.Health = h.report
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return e, h
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScanFileCacheAndLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, h := newEngine(t, Options{Dirs: []string{"testdata/good"}, MaxFileSize: 1024})
	hit := filepath.Join(dir, "drop.bin")
	write(t, hit, "xx "+marker+" yy")
	for i, wantCached := range []bool{false, true} {
		res, err := e.ScanFile(hit)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Matches) != 1 || res.Matches[0].Meta.ID != "TW-TEST-0001" || res.Matches[0].Meta.Severity != 42 || res.Cached != wantCached {
			t.Fatalf("scan %d: %+v", i, res)
		}
		if res.SHA256 == "" || res.Matches[0].Meta.Techniques[0] != "T1486" {
			t.Fatalf("scan %d: no sha256 or technique: %+v", i, res)
		}
	}
	if got := testutil.ToFloat64(e.scans.WithLabelValues("file", "cached")); got != 1 {
		t.Fatalf("cached scans = %v, want 1", got)
	}
	big := filepath.Join(dir, "big.bin")
	write(t, big, strings.Repeat("a", 2048))
	if _, err := e.ScanFile(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big file: err %v, want ErrTooLarge", err)
	}
	if !h.has(ComponentScan + " " + event.HealthDegraded) {
		t.Fatalf("no health report for the size limit: %v", h.seen)
	}
	clean := filepath.Join(dir, "clean.txt")
	write(t, clean, "nothing here")
	if res, err := e.ScanFile(clean); err != nil || len(res.Matches) != 0 {
		t.Fatalf("clean file: %+v %v", res, err)
	}
}

// TestReloadKeepsOldSet: a broken edit leaves the working set active, a
// good edit replaces it, and Watch does that on its own.
func TestReloadKeepsOldSet(t *testing.T) {
	t.Parallel()
	rdir := t.TempDir()
	good, err := os.ReadFile("testdata/good/marker.yar")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(rdir, "a.yar"), string(good))
	e, h := newEngine(t, Options{Dirs: []string{rdir}})
	sample := filepath.Join(t.TempDir(), "s.txt")
	write(t, sample, marker+" second-marker-9c1d")

	write(t, filepath.Join(rdir, "a.yar"), "rule broken { condition: $nope }")
	if err := e.Reload(); err == nil {
		t.Fatal("reload of a broken rule succeeded")
	}
	if !h.has("reload failed") {
		t.Fatalf("no health event for the failed reload: %v", h.seen)
	}
	if res, _ := e.ScanFile(sample); len(res.Matches) != 1 {
		t.Fatalf("old set not kept: %+v", res)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	// Watch is asynchronous: rewrite until the new rule is active, bounded.
	second := strings.Replace(string(good), marker, "second-marker-9c1d", 1)
	second = strings.Replace(second, "TW_Test_Marker", "TW_Test_Second", 1)
	// The watcher may not be registered yet on the first write, so the
	// file is rewritten every 2s (longer than the debounce) until then.
	deadline := time.Now().Add(10 * time.Second)
	var wrote time.Time
	for {
		if time.Since(wrote) > 2*time.Second {
			write(t, filepath.Join(rdir, "a.yar"), second)
			wrote = time.Now()
		}
		time.Sleep(50 * time.Millisecond) // polling pace, not an assertion
		res, err := e.ScanFile(sample)
		if err == nil && len(res.Matches) == 1 && res.Matches[0].Rule == "TW_Test_Second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hot reload did not happen within 10s: %+v %v", res, err)
		}
	}
}

func TestScanPID(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("memory scans need CAP_SYS_PTRACE: run as root")
	}
	e, _ := newEngine(t, Options{Dirs: []string{"testdata/good"}})
	// The marker lives only in the child's environment, i.e. its stack.
	cmd := exec.Command("sleep", "30")
	cmd.Env = []string{"TW_MARKER=" + marker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ms, err := e.ScanPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Rule != "TW_Test_Marker" {
		t.Fatalf("memory scan: %+v", ms)
	}
	if _, err := e.ScanPID(0); err == nil {
		t.Fatal("pid 0 accepted")
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	e, _ := newEngine(t, Options{Builtin: rules.Builtin, BuiltinDir: "yara"})
	root := t.TempDir()
	for i, body := range []string{"plain", "plain too", "Your files are encrypted. Get the decryptor via .onion"} {
		sub := filepath.Join(root, "d", string(rune('a'+i)))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(sub, "f.txt"), body)
	}
	var got []string
	st, err := e.Sweep(context.Background(), []string{root}, SweepOptions{Threads: 2, CPU: 0.5}, func(r Result, err error) {
		if err == nil {
			got = append(got, r.Path+" "+r.Matches[0].Rule)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "d", "c", "f.txt") + " TW_Ransom_Note_Wording"
	if st.Files != 3 || st.Matches != 1 || len(got) != 1 || got[0] != want {
		t.Fatalf("sweep: %+v %q", st, got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Sweep(ctx, []string{root}, SweepOptions{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sweep: %v", err)
	}
}
