package process

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

func TestToECS(t *testing.T) {
	t.Parallel()
	start, end := evBase, evBase.Add(time.Second)
	full := proctree.Proc{
		PID: 300, PPID: 200, Start: start, Name: "payload", Executable: "/tmp/payload", CommandLine: "/tmp/payload -k",
		Args: []string{"/tmp/payload", "-k"}, Cwd: "/tmp", UID: 1000, User: "pos",
	}
	parent := proctree.Proc{PID: 200, Start: start.Add(-time.Minute), Name: "sh", Executable: "/bin/sh", CommandLine: "sh -c x", Args: []string{"sh", "-c", "x"}, UID: 0}
	exited := full
	exited.Exited, exited.End, exited.ExitCode = true, end, 2
	unknownCode := exited
	unknownCode.ExitCode = proctree.ExitCodeUnknown
	tests := []struct {
		name   string
		p      proctree.Proc
		parent *proctree.Proc
		check  func(t *testing.T, got *event.Process)
	}{
		{
			name: "running with parent", p: full, parent: &parent,
			check: func(t *testing.T, got *event.Process) {
				if got.PID != 300 || got.Name != "payload" || got.Executable != "/tmp/payload" || got.CommandLine != "/tmp/payload -k" ||
					len(got.Args) != 2 || got.WorkingDirectory != "/tmp" || !got.Start.Equal(start) || got.End != nil || got.ExitCode != nil {
					t.Errorf("process = %+v", got)
				}
				if got.User == nil || got.User.ID != "1000" || got.User.Name != "pos" {
					t.Errorf("user = %+v", got.User)
				}
				if pp := got.Parent; pp == nil || pp.PID != 200 || pp.Name != "sh" || pp.Executable != "/bin/sh" || pp.CommandLine != "sh -c x" || !pp.Start.Equal(parent.Start) {
					t.Errorf("parent = %+v", got.Parent)
				}
				if got.Hash != nil {
					t.Error("hashing belongs to alert building, not telemetry")
				}
			},
		},
		{
			name: "exited", p: exited,
			check: func(t *testing.T, got *event.Process) {
				if got.End == nil || !got.End.Equal(end) || got.ExitCode == nil || *got.ExitCode != 2 {
					t.Errorf("end %v code %v", got.End, got.ExitCode)
				}
				if got.Parent == nil || got.Parent.PID != 200 || got.Parent.Name != "" {
					t.Errorf("parent without entry = %+v, want pid only", got.Parent)
				}
			},
		},
		{
			name: "exit code unknown", p: unknownCode,
			check: func(t *testing.T, got *event.Process) {
				if got.End == nil || got.ExitCode != nil {
					t.Errorf("end %v code %v, want end and no code", got.End, got.ExitCode)
				}
			},
		},
		{
			name: "nothing known",
			p:    proctree.Proc{PID: 9, UID: proctree.UnknownUID},
			check: func(t *testing.T, got *event.Process) {
				if got.Name != UnknownName || got.User != nil || got.Start != nil || got.Parent != nil {
					t.Errorf("process = %+v", got)
				}
			},
		},
		{
			name: "root is a user",
			p:    proctree.Proc{PID: 9, Name: "x", UID: 0},
			check: func(t *testing.T, got *event.Process) {
				if got.User == nil || got.User.ID != "0" {
					t.Errorf("user = %+v", got.User)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := ToECS(tc.p, tc.parent)
			tc.check(t, got)
			if len(got.Args) > 0 {
				got.Args[0] = "redacted"
				if tc.p.Args[0] == "redacted" {
					t.Error("ToECS shares Args with the table entry")
				}
			}
		})
	}
}

// healthLog records health callbacks.
type healthLog struct {
	mu  sync.Mutex
	got []string
}

func (h *healthLog) fn(component, state, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, component+" "+state+" "+reason)
}

func (h *healthLog) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

func TestAutoFallsBackToPoll(t *testing.T) {
	t.Parallel()
	s := New(Config{PollInterval: 50 * time.Millisecond}, proctree.New(proctree.Options{}), testLogger(t))
	s.dial = func() (*nlConn, error) { return nil, errors.New("no connector in this test") }
	var h healthLog
	s.OnHealth(h.fn)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(event.Event) {}) }()
	waitFor(t, 10*time.Second, "the poll backend", func() bool { return s.Backend() == BackendPoll })
	got := h.all()
	if len(got) != 1 || !strings.HasPrefix(got[0], "process degraded ") || !strings.Contains(got[0], "no connector in this test") {
		t.Errorf("health = %q, want one degraded report naming the reason", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil on cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := s.Run(context.Background(), func(event.Event) {}); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestExplicitNetlinkFailureIsAnError(t *testing.T) {
	t.Parallel()
	s := New(Config{Backend: BackendNetlink}, nil, nil)
	s.dial = func() (*nlConn, error) { return nil, errors.New("no connector in this test") }
	var h healthLog
	s.OnHealth(h.fn)
	err := s.Run(context.Background(), func(event.Event) {})
	if err == nil || !strings.Contains(err.Error(), "no connector in this test") {
		t.Fatalf("Run = %v, want the dial error", err)
	}
	if got := h.all(); len(got) != 1 || !strings.HasPrefix(got[0], "process failed ") {
		t.Errorf("health = %q, want one failed report", got)
	}
	if s.Backend() != "" {
		t.Errorf("Backend = %q after failure, want empty", s.Backend())
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	if got := New(Config{}, nil, nil).Name(); got != "process" {
		t.Fatalf("Name = %q", got)
	}
}
