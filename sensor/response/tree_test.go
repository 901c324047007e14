package response

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// startTree starts a real shell with two workers and a grandchild and
// returns the shell's pid once all four processes exist.
func startTree(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("process trees are read from /proc")
	}
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & sleep 30 & sh -c 'sleep 30 & wait' & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pids, _ := Descendants("/proc", cmd.Process.Pid)
		for _, p := range pids {
			if p != os.Getpid() {
				_ = signal(p, event.ActionKill)
			}
		}
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := Descendants("/proc", cmd.Process.Pid)
		if err == nil && len(pids) >= 5 {
			return cmd, cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree not complete within 5s: %v", pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func states(t *testing.T, pids []int) []byte {
	t.Helper()
	var out []byte
	for _, p := range pids {
		st, err := ReadStat("/proc", p)
		if err != nil {
			out = append(out, 'X')
			continue
		}
		out = append(out, st.State)
	}
	return out
}

func waitStates(t *testing.T, pids []int, ok func(byte) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := states(t, pids)
		if !slices.ContainsFunc(st, func(c byte) bool { return !ok(c) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("states %q of %v, want all %s", st, pids, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStopTreeStopsEveryDescendantThenKillKillsThem(t *testing.T) {
	t.Parallel()
	_, root := startTree(t)
	tree := NewTree("/proc", os.Getpid())
	pids, err := tree.Stop(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) < 5 || pids[0] != root {
		t.Fatalf("stopped %v, want root first and at least 5 processes", pids)
	}
	waitStates(t, pids, func(c byte) bool { return c == 'T' || c == 't' }, "stopped")
	if err := tree.Kill(pids); err != nil {
		t.Fatal(err)
	}
	waitStates(t, pids, func(c byte) bool { return c == 'X' || c == 'Z' }, "dead")
}

func TestChildrenWalkFindsTheWholeTreeLikeTheScan(t *testing.T) {
	t.Parallel()
	_, root := startTree(t)
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc/PID/task")
	}
	walked := []int{root}
	for i := 0; i < len(walked); i++ {
		walked = append(walked, Children("/proc", walked[i])...)
	}
	if len(walked) == 1 {
		t.Skip("the kernel provides no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)")
	}
	scanned, err := Descendants("/proc", root)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(walked)
	slices.Sort(scanned)
	if !slices.Equal(walked, scanned) {
		t.Fatalf("children walk found %v, the /proc scan %v", walked, scanned)
	}
	if got := Children("/proc", 1<<30); got != nil {
		t.Fatalf("children of a pid that does not exist: %v", got)
	}
}

func TestResponderKillsTheWholeTree(t *testing.T) {
	t.Parallel()
	_, root := startTree(t)
	pids, _ := Descendants("/proc", root)
	r := New(ModeEnforce, nil, slog.New(slog.DiscardHandler))
	d := &pipeline.Detection{Alert: event.Event{Event: event.Meta{ID: "e"}}, Response: event.ActionKill, Target: &pipeline.Target{PID: root, Tree: true}}
	r.Respond(context.Background(), d)
	if got := d.Alert.Tillwatch.Response; got.Result != event.ResultOK {
		t.Fatalf("response %+v", got)
	}
	waitStates(t, pids, func(c byte) bool { return c == 'X' || c == 'Z' }, "dead")
}

func TestStopTreeRefusesProtectedRoots(t *testing.T) {
	t.Parallel()
	tree := NewTree("/proc", os.Getpid())
	for _, pid := range []int{1, os.Getpid()} {
		if _, err := tree.Stop(pid); err != ErrProtected {
			t.Errorf("Stop(%d) = %v, want ErrProtected", pid, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     Stat
		err      bool
	}{
		{"plain", "42 (sleep) S 7 42 7 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10", Stat{PID: 42, PPID: 7, State: 'S', Start: 123456}, false},
		{"name with spaces and parens", "42 (a (b) c) T 9 42 7 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 99 1000 10", Stat{PID: 42, PPID: 9, State: 'T', Start: 99}, false},
		{"truncated", "42 (x) S 7", Stat{}, true},
		{"garbage", "nonsense", Stat{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStat(42, []byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseStat = %+v, %v; want %+v, err %v", got, err, tc.want, tc.err)
			}
		})
	}
}
