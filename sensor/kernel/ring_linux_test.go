package kernel

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tillwatch/tillwatch/sensor/process"
)

// TestRingSizesLoaded: the rings are loaded with the configured sizes, and
// the defaults when none is set.
func TestRingSizesLoaded(t *testing.T) {
	for _, tc := range []struct {
		name               string
		cfg                Config
		wantProc, wantTamp int
	}{
		{"defaults", Config{}, DefaultProcRing, DefaultTamperRing},
		{"set", Config{ProcRing: 2 << 20, TamperRing: 64 << 10}, 2 << 20, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLayer(t, tc.cfg)
			if p, tm := l.RingSizes(); p != tc.wantProc || tm != tc.wantTamp {
				t.Errorf("rings %d and %d bytes, want %d and %d", p, tm, tc.wantProc, tc.wantTamp)
			}
		})
	}
}

// TestPinnedRingOfOtherSizeReplaced: a ring pinned by an earlier run with
// another size (the setting changed since) is replaced with a log line,
// the pinned tripwires are attached again so that they write to the new
// ring, and the other pinned state (taint) is kept. A later load of the
// same sizes re-uses everything and logs nothing.
func TestPinnedRingOfOtherSizeReplaced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	dir := testPinDir(t)
	t.Cleanup(func() { Release(dir) })
	old, err := Load(Config{PinDir: dir, ProcRing: 512 << 10, TamperRing: 32 << 10})
	if err != nil {
		t.Fatalf("first Load: %v", err)
	}
	// A pid above any this machine hands out: taint state only.
	const agent = 1<<22 + 7
	if err := old.TaintAgent(agent); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	l, err := Load(Config{PinDir: dir, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Load over rings of another size: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Unpin(); err != nil {
			t.Errorf("Unpin: %v", err)
		}
	})
	if p, tm := l.RingSizes(); p != DefaultProcRing || tm != DefaultTamperRing {
		t.Errorf("rings %d and %d bytes after the replacement, want the defaults", p, tm)
	}
	for _, want := range []string{"ring pinned with another size replaced", "ring=proc_events", "pinned_bytes=524288", "ring=tamper_events", "pinned_bytes=32768"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if l.Reused() != 0 {
		t.Errorf("%d links re-used: they run programs writing to the replaced rings", l.Reused())
	}
	if _, ok := l.Tainted(agent); !ok {
		t.Error("the taint map pinned by the first run was lost")
	}

	// The attached programs write to the new ring.
	marker := "ring-" + unique(t)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	seen := false
	done := make(chan error, 1)
	go func() {
		done <- l.ProcessFeed().Run(ctx, func(ev process.KernelEvent) {
			if ev.Kind == process.KernelExec && len(ev.Args) == 2 && ev.Args[1] == marker {
				mu.Lock()
				seen = true
				mu.Unlock()
			}
		})
	}()
	waitFor(t, 20*time.Second, "the exec on the new ring", func() bool {
		if err := exec.Command("/bin/true", marker).Run(); err != nil {
			t.Fatalf("exec: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		return seen
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("feed: %v", err)
	}

	// Same sizes again: nothing replaced, every link re-used.
	logs.Reset()
	again, err := Load(Config{PinDir: dir, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("third Load: %v", err)
	}
	defer again.Close()
	if again.Reused() == 0 || again.Reused()+again.Skipped() != len(attach) {
		t.Errorf("re-used %d links (skipped %d) of %d", again.Reused(), again.Skipped(), len(attach))
	}
	if logs.Len() != 0 {
		t.Errorf("a load of the pinned sizes logged:\n%s", logs.String())
	}
}

// TestUpgradeFromEightMiBRings: the pins of an earlier build (its own
// digest folder, with the 8 MiB process ring earlier builds made) are
// removed whole at Load, and the new build's rings have the new sizes.
func TestUpgradeFromEightMiBRings(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	dir := testPinDir(t)
	t.Cleanup(func() { Release(dir) })
	oldDir := filepath.Join(dir, "0123456789ab") // another build's digest
	if err := os.MkdirAll(oldDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Name: "proc_events", Type: ebpf.RingBuf, MaxEntries: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Pin(filepath.Join(oldDir, "proc_events")); err != nil {
		t.Fatal(err)
	}
	ring.Close()

	l, err := Load(Config{PinDir: dir})
	if err != nil {
		t.Fatalf("Load over an earlier build's pins: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Unpin(); err != nil {
			t.Errorf("Unpin: %v", err)
		}
	})
	if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
		t.Errorf("the earlier build's pins are still there: %v", err)
	}
	if p, tm := l.RingSizes(); p != DefaultProcRing || tm != DefaultTamperRing {
		t.Errorf("rings %d and %d bytes, want the defaults", p, tm)
	}
}
