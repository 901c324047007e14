package kernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// stoppedState reports whether pid is in the stopped state (T).
func stoppedState(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] == 'T'
		}
	}
	return false
}

// TestDecoyTripwireWhileSensorDown arms the decoy tripwire, releases the
// loader's handles (the sensor is dead; only the pins remain), lets an
// untainted encryptor reach the decoy by a relative path, and checks that
// it is stopped before it touched another file. A second Load (the
// restarted sensor) re-uses the pinned links, finds the stopped process in
// the pinned map and the record in the pinned ring, and judges it.
func TestDecoyTripwireWhileSensorDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	cfg := Config{PinDir: testPinDir(t), Enforce: true, Decoys: true}
	t.Cleanup(func() { Release(cfg.PinDir) })
	l1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	decoy := "0000 Accounts " + unique(t) + ".pdf"
	// Files first: this test process is no sensor, so writing the decoy
	// once it is armed would stop the test itself.
	for _, n := range []string{decoy, "a.txt", "b.txt", "c.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("plain\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := l1.AddDecoys(decoy); err != nil {
		t.Fatal(err)
	}
	if err := l1.Close(); err != nil { // the sensor dies; pins stay
		t.Fatal(err)
	}

	// Honest reads of the decoy and writes elsewhere are not stopped.
	read := exec.Command("/bin/sh", "-c", `cat ./"$1" >/dev/null && echo x > other.txt`, "sh", decoy)
	read.Dir = dir
	if out, err := read.CombinedOutput(); err != nil {
		t.Fatalf("reading a decoy: %v %s", err, out)
	}

	enc := exec.Command("/bin/sh", "-c", `for f in *; do echo encrypted > "./$f"; done`)
	enc.Dir = dir
	if err := enc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Process.Kill(); enc.Wait() })
	waitFor(t, 10*time.Second, "the encryptor to be stopped", func() bool { return stoppedState(enc.Process.Pid) })
	for _, n := range []string{"a.txt", "b.txt", "c.txt"} {
		if b, _ := os.ReadFile(filepath.Join(dir, n)); string(b) != "plain\n" {
			t.Errorf("%s changed before the stop", n)
		}
	}

	l2, err := Load(cfg) // the restarted sensor
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Unpin() })
	if l2.Reused() != len(attach) {
		t.Errorf("restart re-used %d of %d pinned links", l2.Reused(), len(attach))
	}
	st, err := l2.Stopped()
	if err != nil {
		t.Fatal(err)
	}
	var found *Stopped
	for i := range st {
		if st[i].PID == enc.Process.Pid {
			found = &st[i]
		}
	}
	if found == nil || found.Reason != ReasonDecoyOpen || found.Name != decoy {
		t.Fatalf("stopped map after restart: %+v, want pid %d at %q", st, enc.Process.Pid, decoy)
	}
	// The record written while no sensor read the ring is still there.
	got := make(chan Tamper, 16)
	ctx, cancel := contextWithCancel()
	defer cancel()
	go l2.TamperFeed().Run(ctx, func(tp Tamper) { got <- tp })
	select {
	case tp := <-got:
		if tp.PID != enc.Process.Pid || tp.Reason != ReasonDecoyOpen {
			t.Errorf("ring record %+v", tp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no record in the pinned ring after restart")
	}
	// Judge: kill it; the exit clears the stopped entry in the kernel.
	enc.Process.Signal(syscall.SIGKILL)
	enc.Wait()
	waitFor(t, 10*time.Second, "the stopped entry to go", func() bool {
		st, _ := l2.Stopped()
		for _, s := range st {
			if s.PID == enc.Process.Pid {
				return false
			}
		}
		return true
	})
}

// TestSetDecoysDropsNamesOfEarlierRuns checks that SetDecoys leaves exactly
// the names given: a decoy name an earlier run armed (another state folder,
// decoys since turned off) must not keep stopping namesakes.
func TestSetDecoysDropsNamesOfEarlierRuns(t *testing.T) {
	l := newTestLayer(t, Config{})
	old, kept, added := "0000 Old "+unique(t)+".pdf", "0000 Kept "+unique(t)+".pdf", "zz New "+unique(t)+".pdf"
	if err := l.AddDecoys(old, kept); err != nil {
		t.Fatal(err)
	}
	if err := l.SetDecoys(kept, added); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	var (
		k tripwireKey
		v uint32
	)
	it := l.objs.Decoys.Iterate()
	for it.Next(&k, &v) {
		b := make([]byte, 0, len(k.S))
		for _, c := range k.S {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		got[string(b)] = true
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[kept] || !got[added] || got[old] {
		t.Errorf("decoys after SetDecoys: %v, want exactly %q and %q", got, kept, added)
	}
}
