package sigma

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// TestRealProcess runs the real process source (netlink, so root) into the
// detector and starts a real program the built-in rule
// linux_security_tool_stopped matches: a copy of /bin/sh named systemctl
// whose command line stops tillwatch.
func TestRealProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the process connector follows real processes")
	}
	t.Parallel()
	d := New(builtin(t), "linux")
	var (
		mu     sync.Mutex
		dets   []pipeline.Detection
		exited = map[int64]bool{}
	)
	src := process.New(process.Config{Backend: process.BackendNetlink}, proctree.New(proctree.Options{}), slog.New(slog.DiscardHandler))
	events := make(chan event.Event, 65536)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := src.Run(ctx, func(ev event.Event) {
			select {
			case events <- ev:
			default:
			}
		}); err != nil {
			t.Errorf("process source: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				ds := d.Detect(&ev)
				mu.Lock()
				dets = append(dets, ds...)
				if ev.Event.Action == process.ActionExit && ev.Process != nil {
					exited[ev.Process.PID] = true
				}
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	seenExit := func(pid int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return exited[int64(pid)]
		}
	}
	// The connector needs a moment to subscribe; a probe process tells.
	waitFor(t, 5*time.Second, "process source ready", func() bool {
		c := exec.Command("/bin/true")
		return c.Run() == nil && seenExit(c.Process.Pid)()
	})

	dir := t.TempDir()
	exe := filepath.Join(dir, "systemctl")
	copyFile(t, "/bin/sh", exe)
	tests := []struct {
		name string
		verb string
		want bool
	}{
		{"stop tillwatch", "stop", true},
		{"status tillwatch", "status", false},
	}
	for _, tc := range tests {
		// Not parallel: they share the detector's output. The shell lives a
		// little (two commands, so it does not exec sleep) for the source to
		// read its command line from /proc.
		cmd := exec.Command(exe, "-c", "sleep 0.2; :", tc.verb, "tillwatch-sensor")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out)
		}
		pid := cmd.Process.Pid
		waitFor(t, 10*time.Second, "the exit of "+tc.name, seenExit(pid))
		var got *event.Event
		mu.Lock()
		for i := range dets {
			if a := &dets[i].Alert; a.Process != nil && a.Process.PID == int64(pid) {
				got = a
			}
		}
		mu.Unlock()
		switch {
		case tc.want && got == nil:
			t.Errorf("%s: no sigma alert for pid %d", tc.name, pid)
		case !tc.want && got != nil:
			t.Errorf("%s: unexpected alert %s", tc.name, got.Rule.ID)
		case got != nil:
			if got.Rule.Ruleset != event.RulesetSigma || got.Rule.ID != "4f2a9c71-5d3e-4b8f-9e6a-1c7b2d8e9f03" ||
				got.Process.Executable != exe || got.Event.Severity != 73 {
				t.Errorf("%s: alert rule %+v, process %+v, severity %d", tc.name, *got.Rule, *got.Process, got.Event.Severity)
			}
		}
	}
	if d.Errors() != 0 {
		t.Errorf("%d evaluation errors", d.Errors())
	}
}

func waitFor(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
