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
// exit(3) is 3, a SIGKILL is 137. On a kernel without BTF the layer still
// loads and the codes are unknown.
func TestExitCodesFromKernel(t *testing.T) {
	t.Run("BTF", func(t *testing.T) { exitCodes(t, Config{}, 3, 137) })
	t.Run("no BTF", func(t *testing.T) {
		exitCodes(t, Config{noKernelBTF: true, FreshExec: true}, proctree.ExitCodeUnknown, proctree.ExitCodeUnknown)
	})
}

func exitCodes(t *testing.T, cfg Config, wantExit3, wantKilled int64) {
	l := newTestLayer(t, cfg)
	if l.NoBTF() != cfg.noKernelBTF {
		t.Fatalf("NoBTF %v", l.NoBTF())
	}
	src := process.New(process.Config{}, proctree.New(proctree.Options{}), slog.New(slog.DiscardHandler))
	src.SetKernelFeed(l.ProcessFeed())
	var mu sync.Mutex
	codes := map[int64]int64{}
	emit := func(ev event.Event) {
		p := ev.Process
		if p == nil || ev.Event.Action != process.ActionExit {
			return
		}
		code := int64(proctree.ExitCodeUnknown)
		if p.ExitCode != nil {
			code = *p.ExitCode
		}
		mu.Lock()
		codes[p.PID] = code
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
	for pid, want := range map[int]int64{three.Process.Pid: wantExit3, killed.Process.Pid: wantKilled} {
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
