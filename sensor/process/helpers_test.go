package process

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// recorder collects emitted events; it never blocks the source.
type recorder struct {
	mu  sync.Mutex
	evs []event.Event
}

func (r *recorder) emit(ev event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func (r *recorder) all() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.evs...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvent waits for an emitted event that matches.
func (r *recorder) waitEvent(t *testing.T, timeout time.Duration, what string, match func(event.Event) bool) event.Event {
	t.Helper()
	var got event.Event
	waitFor(t, timeout, what, func() bool {
		for _, ev := range r.all() {
			if match(ev) {
				got = ev
				return true
			}
		}
		return false
	})
	return got
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// copyBinary copies a system binary into a temp dir under a unique name, so
// a test can tell its own child from everything else running.
func copyBinary(t *testing.T, src, name string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Skipf("no %s to run: %v", src, err)
	}
	defer in.Close()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// stamp fills what the pipeline would, so events can be validated.
func stamp(ev event.Event) event.Event {
	ev.Host = event.Host{ID: "h", Name: "till-1"}
	ev.Agent = event.Agent{ID: "a", Type: event.AgentType, Version: "test"}
	return ev
}

// checkTelemetry asserts the fields every process event carries.
func checkTelemetry(t *testing.T, ev event.Event, action string) {
	t.Helper()
	typ := map[string]string{ActionExec: "start", ActionExit: "end"}[action]
	m := ev.Event
	if m.Kind != event.KindEvent || len(m.Category) != 1 || m.Category[0] != "process" || len(m.Type) != 1 || m.Type[0] != typ ||
		m.Action != action || m.Dataset != event.DatasetProcess || m.ID == "" || ev.ECS.Version != event.ECSVersion || ev.Timestamp.IsZero() {
		t.Errorf("event meta = %+v ecs %+v ts %v, want a %s telemetry event", m, ev.ECS, ev.Timestamp, action)
	}
	if ev.Host.ID != "" || ev.Agent.ID != "" {
		t.Errorf("source stamped host/agent: %+v %+v", ev.Host, ev.Agent)
	}
	if st := stamp(ev); st.Validate() != nil {
		err := st.Validate()
		t.Errorf("event does not validate: %v", err)
	}
	if (action == ActionExit) != (ev.Process.End != nil) {
		t.Errorf("process.end = %v for %s", ev.Process.End, action)
	}
}

// startChild starts bin. A binary just written by copyBinary can fail with
// ETXTBSY while a child forked concurrently (by another parallel test) still
// holds the written fd until its exec closes it (golang/go#22315), so that
// one error is retried for a bounded time.
func startChild(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cmd := exec.Command(bin, args...)
		err := cmd.Start()
		if err == nil {
			return cmd
		}
		if !errors.Is(err, syscall.ETXTBSY) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
