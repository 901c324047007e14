package kernel

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/sensor/process"
)

// TestExecArgsOfEverySize: the exec request carries only the used part of
// its argv area to the ring; command lines from one short argument to
// nearly the whole 4 KiB area arrive complete.
func TestExecArgsOfEverySize(t *testing.T) {
	l := newTestLayer(t, Config{})
	marker := "args-" + unique(t)
	cases := map[string][]string{
		"short":  {"a"},
		"medium": repeatArgs(10, 100),
		"full":   repeatArgs(15, 250), // 15 x 251 bytes of the 4,096
	}
	var mu sync.Mutex
	got := map[string][]string{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.ProcessFeed().Run(ctx, func(ev process.KernelEvent) {
			if ev.Kind == process.KernelExec && len(ev.Args) >= 3 && ev.Args[1] == marker {
				mu.Lock()
				got[ev.Args[2]] = ev.Args[3:]
				mu.Unlock()
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feed: %v", err)
		}
	}()
	waitFor(t, 20*time.Second, "every command line", func() bool {
		for name, args := range cases {
			if err := exec.Command("/bin/true", append([]string{marker, name}, args...)...).Run(); err != nil {
				t.Fatalf("exec: %v", err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(cases)
	})
	mu.Lock()
	defer mu.Unlock()
	for name, want := range cases {
		if !slices.Equal(got[name], want) {
			t.Errorf("%s: got %d arguments (%d bytes), want %d (%d bytes)", name, len(got[name]), len(strings.Join(got[name], " ")), len(want), len(strings.Join(want, " ")))
		}
	}
}

func repeatArgs(n, size int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%02d", i) + strings.Repeat("x", size-2)
	}
	return out
}
