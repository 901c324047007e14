package kernel

import (
	"context"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// TestExitCodesFromKernel: the process source on the kernel feed ends a
// process with its exit code, shell-style, as the proc connector would: an
// exit(3) is 3, a SIGKILL is 137.
func TestExitCodesFromKernel(t *testing.T) {
	l := newTestLayer(t, Config{})
	src := process.New(process.Config{}, proctree.New(proctree.Options{}), slog.New(slog.DiscardHandler))
	src.SetKernelFeed(l.ProcessFeed())
	var mu sync.Mutex
	codes := map[int64]int64{}
	emit := func(ev event.Event) {
		p := ev.Process
		if p == nil || p.ExitCode == nil {
			return
		}
		mu.Lock()
		codes[p.PID] = *p.ExitCode
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, emit) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 10*time.Second, "the source to start", func() bool { return src.Backend() != "" })
	if b := src.Backend(); b != process.BackendKernel {
		t.Fatalf("backend %q, want %q", b, process.BackendKernel)
	}

	three := exec.Command("/bin/sh", "-c", "exit 3")
	if err := three.Run(); err == nil {
		t.Fatal("sh -c 'exit 3' succeeded")
	}
	killed := exec.Command("sleep", "30")
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	killed.Process.Signal(syscall.SIGKILL)
	killed.Wait()
	for pid, want := range map[int]int64{three.Process.Pid: 3, killed.Process.Pid: 137} {
		waitFor(t, 10*time.Second, "the exit code", func() bool {
			mu.Lock()
			defer mu.Unlock()
			_, ok := codes[int64(pid)]
			return ok
		})
		mu.Lock()
		if got := codes[int64(pid)]; got != want {
			t.Errorf("pid %d exit code %d, want %d", pid, got, want)
		}
		mu.Unlock()
	}
}
