package response

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// startSleeper starts a real child process the test owns.
func startSleeper(t *testing.T) (*exec.Cmd, <-chan error, int64) {
	t.Helper()
	// The start the process source stamps on the exec event is the fork
	// time; the launch time stands in for it.
	launched := time.Now().UnixMilli()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, done, launched
}

func detection(pid int, start int64, action string) *pipeline.Detection {
	return &pipeline.Detection{
		Alert:    event.Event{Event: event.Meta{ID: "e1", Kind: event.KindAlert}},
		Response: action,
		Target:   &pipeline.Target{PID: pid, Start: start},
	}
}

func waitSignal(t *testing.T, done <-chan error, want syscall.Signal) {
	t.Helper()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("process ended with %v, want signal %v", err, want)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != want {
			t.Fatalf("process ended with %v, want signal %v", ws, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("process not stopped by %v within 5s", want)
	}
}

func TestEnforceKillsTheRealProcess(t *testing.T) {
	t.Parallel()
	cmd, done, start := startSleeper(t)
	r := New(ModeEnforce, nil, slog.New(slog.DiscardHandler))
	d := detection(cmd.Process.Pid, start, event.ActionKill)
	r.Respond(context.Background(), d)
	if got := d.Alert.Tillwatch.Response; got.Action != event.ActionKill || got.Result != event.ResultOK {
		t.Fatalf("response = %+v, want kill ok", got)
	}
	waitSignal(t, done, syscall.SIGKILL)
}

func TestSuspendStopsTheRealProcess(t *testing.T) {
	t.Parallel()
	cmd, _, start := startSleeper(t)
	r := New(ModeEnforce, nil, slog.New(slog.DiscardHandler))
	d := detection(cmd.Process.Pid, start, event.ActionSuspend)
	r.Respond(context.Background(), d)
	if d.Alert.Tillwatch.Response.Result != event.ResultOK {
		t.Fatalf("suspend failed: %+v", d.Alert.Tillwatch.Response)
	}
	p, _ := process.NewProcess(int32(cmd.Process.Pid))
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := p.Status()
		if err == nil && len(st) > 0 && st[0] == process.Stop {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process state %v, want stopped", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	cmd, done, start := startSleeper(t)
	tests := []struct {
		name   string
		mode   string
		d      *pipeline.Detection
		want   string
		action string
	}{
		{"monitor mode holds back", ModeMonitor, detection(cmd.Process.Pid, start, event.ActionKill), "monitor mode: would kill", event.ActionNone},
		{"reused pid is not touched", ModeEnforce, detection(cmd.Process.Pid, start-3_600_000, event.ActionKill), ErrPIDReused.Error(), event.ActionKill},
		{"pid 1 is protected", ModeEnforce, detection(1, 0, event.ActionKill), ErrProtected.Error(), event.ActionKill},
		{"action outside the allow-list", ModeEnforce, detection(cmd.Process.Pid, start, event.ActionIsolate), "allow-list", event.ActionIsolate},
		{"no target", ModeEnforce, &pipeline.Detection{Response: event.ActionKill}, ErrNoTarget.Error(), event.ActionKill},
	}
	for _, tc := range tests {
		r := New(tc.mode, nil, slog.New(slog.DiscardHandler))
		r.Respond(context.Background(), tc.d)
		got := tc.d.Alert.Tillwatch.Response
		if got.Action != tc.action || !strings.Contains(got.Result, tc.want) {
			t.Errorf("%s: response %+v, want action %s result containing %q", tc.name, got, tc.action, tc.want)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a refused response still hit the process: %v", err)
	default:
	}
}

func TestNoProposalNoResponse(t *testing.T) {
	t.Parallel()
	r := New(ModeEnforce, nil, slog.New(slog.DiscardHandler))
	d := &pipeline.Detection{}
	r.Respond(context.Background(), d)
	if d.Alert.Tillwatch != nil {
		t.Errorf("no proposed action must leave no response, got %+v", d.Alert.Tillwatch)
	}
}

// TestOnlyUnderActsOnlyInItsTree: with response.only_under set to this
// test's pid, its own child is killed, and a process outside its tree (a
// sleep whose shell exited, re-parented away) is refused and left alive.
func TestOnlyUnderActsOnlyInItsTree(t *testing.T) {
	t.Parallel()
	r := New(ModeEnforce, nil, slog.New(slog.DiscardHandler))
	r.OnlyUnder(os.Getpid())

	cmd, done, start := startSleeper(t)
	d := detection(cmd.Process.Pid, start, event.ActionKill)
	r.Respond(context.Background(), d)
	if got := d.Alert.Tillwatch.Response; got.Result != event.ResultOK {
		t.Fatalf("in scope: response = %+v, want kill ok", got)
	}
	waitSignal(t, done, syscall.SIGKILL)

	out, err := exec.Command("/bin/sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })
	if Descends("/proc", orphan, os.Getpid()) {
		t.Skip("the orphan was re-parented below this test (a subreaper); cannot test out of scope")
	}
	d = detection(orphan, 0, event.ActionKill)
	r.Respond(context.Background(), d)
	if got := d.Alert.Tillwatch.Response.Result; got != ErrOutOfScope.Error() {
		t.Fatalf("out of scope: result %q, want %q", got, ErrOutOfScope)
	}
	if err := syscall.Kill(orphan, 0); err != nil {
		t.Fatalf("the process outside the scope was touched: %v", err)
	}
	if st, err := ReadStat("/proc", orphan); err != nil || st.State == 'T' {
		t.Fatalf("the process outside the scope is stopped or gone: %+v %v", st, err)
	}
}
