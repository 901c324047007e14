package kernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDecoyStopHoldsTheFamily: a parent forks 4 workers that write files
// in a guarded root without end; one of them writes a decoy. With the burst
// tripwire armed (its threshold out of reach here), the decoy stop holds
// the worker's parent and grandparent, so the 3 other workers are stopped
// at their next write in the root, in the kernel, before any judgement.
// A judgement of namesake (Resume) releases the family.
func TestDecoyStopHoldsTheFamily(t *testing.T) {
	root := t.TempDir()
	decoy := "0000 Ledger " + unique(t) + ".xlsx"
	// Planted before arming: the test process would be stopped itself.
	if err := os.WriteFile(filepath.Join(root, decoy), []byte("plain\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newTestLayer(t, Config{Enforce: true, Decoys: true, Burst: true, BurstThreshold: 1 << 20, BurstWindow: time.Second, GuardRoots: []string{root}})
	if err := l.AddDecoys(decoy); err != nil {
		t.Fatal(err)
	}
	// Workers overwrite 50 names of their own in a loop; worker 1 writes
	// the decoy after its 20th file.
	loop := exec.Command("/bin/sh", "-c", `
for w in 1 2 3 4; do
  ( i=0
    while :; do
      echo x > "$0/w$w-$((i % 50))"
      i=$((i+1))
      if [ $w = 1 ] && [ $i = 20 ]; then echo x > "$0/$1"; fi
    done ) &
done
wait`, root, decoy)
	loop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The whole group: stopped workers outlive a killed parent.
		unix.Kill(-loop.Process.Pid, unix.SIGKILL)
		loop.Wait()
	})
	parent := loop.Process.Pid
	var decoyStop *Stopped
	var siblings []int
	waitFor(t, 30*time.Second, "the decoy writer and its 3 siblings to be stopped", func() bool {
		st, err := l.Stopped()
		if err != nil {
			t.Fatal(err)
		}
		decoyStop, siblings = nil, nil
		for i := range st {
			switch {
			case st[i].Reason == ReasonDecoyOpen && stoppedState(st[i].PID):
				decoyStop = &st[i]
			case st[i].Reason == ReasonBurst && st[i].Family == parent && stoppedState(st[i].PID):
				siblings = append(siblings, st[i].PID)
			}
		}
		return decoyStop != nil && len(siblings) == 3
	})
	if !slices.Contains(decoyStop.Held, parent) {
		t.Errorf("the decoy stop holds %v, want the workers' parent %d among them", decoyStop.Held, parent)
	}
	if !l.Held(parent) {
		t.Error("the workers' parent is not held")
	}
	if slices.Contains(siblings, decoyStop.PID) || slices.Contains(siblings, parent) {
		t.Errorf("siblings %v include the decoy writer %d or the parent", siblings, decoyStop.PID)
	}
	// A namesake: released.
	if err := l.Resume(*decoyStop, 0); err != nil {
		t.Fatal(err)
	}
	for _, h := range decoyStop.Held {
		if l.Held(h) {
			t.Errorf("family root %d still held after the decoy stop was resumed", h)
		}
	}
}

// TestDecoyStopHoldsNothingWithoutBurst: with the burst tripwire off, a
// decoy stop holds no family (nothing would act on the hold).
func TestDecoyStopHoldsNothingWithoutBurst(t *testing.T) {
	root := t.TempDir()
	decoy := "0000 Ledger " + unique(t) + ".xlsx"
	if err := os.WriteFile(filepath.Join(root, decoy), []byte("plain\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newTestLayer(t, Config{Enforce: true, Decoys: true})
	if err := l.AddDecoys(decoy); err != nil {
		t.Fatal(err)
	}
	w := exec.Command("/bin/sh", "-c", `echo x > "$0"`, filepath.Join(root, decoy))
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	waitFor(t, 10*time.Second, "the decoy writer to be stopped", func() bool { return stoppedState(w.Process.Pid) })
	s := stoppedEntry(t, l, w.Process.Pid)
	if s == nil || s.Reason != ReasonDecoyOpen || len(s.Held) != 0 {
		t.Fatalf("stopped entry %+v, want a decoy stop holding nothing", s)
	}
	if l.Held(os.Getpid()) {
		t.Error("the writer's parent is held")
	}
	if err := l.Resume(*s, 0); err != nil {
		t.Fatal(err)
	}
	waitDone(t, w, 10*time.Second, "the resumed decoy writer")
}
