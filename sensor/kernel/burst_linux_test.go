package kernel

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// newBurstLayer arms the burst tripwire on root alone, absolute paths only
// (relative ones would count for every process on the host), and resumes
// whatever it stopped when the test ends.
func newBurstLayer(t *testing.T, root string) *Layer {
	t.Helper()
	if len(BurstRoots([]string{root})) != 1 {
		// A test that proves nothing is stopped must know the root is
		// guarded: keep test names short (t.TempDir names folders by them).
		t.Fatalf("root %s (%d bytes) is not one the kernel compares", root, len(root))
	}
	l := newTestLayer(t, Config{Enforce: true, Burst: true, BurstThreshold: 8, BurstWindow: 10 * time.Second, GuardRoots: []string{root}})
	want, err := DirID(root)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := l.GuardedRootIDs(); err != nil || len(ids) != 1 || ids[0] != want {
		t.Fatalf("guarded roots' identities %+v (%v), want %+v", ids, err, want)
	}
	t.Cleanup(func() {
		st, _ := l.Stopped()
		for _, s := range st {
			if s.Reason == ReasonBurst {
				l.Resume(s, 0)
			}
		}
	})
	return l
}

func stoppedEntry(t *testing.T, l *Layer, pid int) *Stopped {
	t.Helper()
	st, err := l.Stopped()
	if err != nil {
		t.Fatal(err)
	}
	for i := range st {
		if st[i].PID == pid {
			return &st[i]
		}
	}
	return nil
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}

// TestBurstStopsOneProcess: a process that creates files in a guarded tree
// is stopped at the threshold, before its next change; resumed (judged
// honest), it finishes and is not stopped again. Files outside the guarded
// roots never count.
func TestBurstStopsOneProcess(t *testing.T) {
	root := t.TempDir()
	l := newBurstLayer(t, root)

	outside := t.TempDir()
	free := exec.Command("/bin/sh", "-c", `for i in $(seq 1 40); do echo x > "$0/f$i"; done`, outside)
	if out, err := free.CombinedOutput(); err != nil {
		t.Fatalf("writes outside the guarded root: %v %s", err, out)
	}
	if n := countFiles(t, outside); n != 40 {
		t.Fatalf("outside the guarded root %d files, want 40", n)
	}

	w := exec.Command("/bin/sh", "-c", `for i in $(seq 1 40); do echo x > "$0/f$i"; done`, root)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	waitFor(t, 10*time.Second, "the writer to be stopped", func() bool { return stoppedState(w.Process.Pid) })
	if n := countFiles(t, root); n > 8 {
		t.Errorf("%d files created before the stop, want at most the threshold 8", n)
	}
	s := stoppedEntry(t, l, w.Process.Pid)
	if s == nil || s.Reason != ReasonBurst || s.Family != 0 {
		t.Fatalf("stopped entry %+v, want a burst stop of pid %d alone", s, w.Process.Pid)
	}
	if err := l.Resume(*s, time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("resumed writer: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the resumed writer did not finish (stopped again: %v)", stoppedState(w.Process.Pid))
	}
	if n := countFiles(t, root); n != 40 {
		t.Errorf("%d files after the resume, want 40", n)
	}
}

// TestBurstStopsAFamily: a loop that starts one worker per file (each does
// one change) is counted at the loop, the workers' parent: the worker that
// crosses the threshold is stopped with the loop named as its family root,
// and the family is held until judged.
func TestBurstStopsAFamily(t *testing.T) {
	root := t.TempDir()
	l := newBurstLayer(t, root)
	loop := exec.Command("/bin/sh", "-c", `for i in $(seq 1 40); do /bin/sh -c 'echo x > "$0"' "$0/g$i"; done`, root)
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Process.Kill(); loop.Wait() })
	var s *Stopped
	waitFor(t, 10*time.Second, "a worker of the loop to be stopped", func() bool {
		st, _ := l.Stopped()
		for i := range st {
			if st[i].Reason == ReasonBurst && st[i].Family == loop.Process.Pid && stoppedState(st[i].PID) {
				s = &st[i]
				return true
			}
		}
		return false
	})
	if s.PID == loop.Process.Pid {
		t.Fatalf("the loop itself was stopped; want its worker")
	}
	if !l.Held(loop.Process.Pid) {
		t.Error("the family root is not held")
	}
	if n := countFiles(t, root); n > 8 {
		t.Errorf("%d files before the stop, want at most 8", n)
	}
	if err := l.Resume(*s, time.Minute); err != nil {
		t.Fatal(err)
	}
	if l.Held(loop.Process.Pid) {
		t.Error("the family root still held after the resume")
	}
	done := make(chan error, 1)
	go func() { done <- loop.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("resumed loop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the resumed family did not finish")
	}
	if n := countFiles(t, root); n != 40 {
		t.Errorf("%d files after the resume, want 40", n)
	}
}
