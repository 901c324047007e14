package kernel

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// TestRingDropsCounted: with no reader on the process ring (the sensor is
// down), an exec storm fills it; the kernel counts every record it could
// not put in, and the watch turns the growth into a health event.
func TestRingDropsCounted(t *testing.T) {
	l := newTestLayer(t, Config{})
	before, err := l.RingDrops()
	if err != nil {
		t.Fatal(err)
	}
	if before.Process != 0 || before.Tamper != 0 {
		t.Fatalf("a new pin dir starts with drops %+v", before)
	}
	// A process start is about 700 bytes on the ring: 3,000 overflow the 1 MiB default.
	if out, err := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done").CombinedOutput(); err != nil {
		t.Fatalf("exec storm: %v %s", err, out)
	}
	after, err := l.RingDrops()
	if err != nil {
		t.Fatal(err)
	}
	if after.Process == 0 {
		t.Fatalf("no process record counted as dropped after 3,000 unread execs: %+v", after)
	}
	t.Logf("dropped %d process records", after.Process)

	var mu sync.Mutex
	var reports []string
	w := NewWatch(WatchOptions{Layer: l, Drops: l.RingDrops, DropsEvery: 20 * time.Millisecond,
		Health: func(component, state, reason string) {
			mu.Lock()
			reports = append(reports, component+" "+state+" "+reason)
			mu.Unlock()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx, func(event.Event) {}) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 10*time.Second, "a health event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reports) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(reports[0], "kernel degraded kernel rings full") {
		t.Errorf("health report %q", reports[0])
	}
}
