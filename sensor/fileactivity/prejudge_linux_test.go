package fileactivity

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// slowHook holds its Handle of one file's completed write until released,
// standing in for a guard busy scoring, and prejudges like the file guard:
// empty files and the one file the test opens for reading are allowed at
// once.
type slowHook struct {
	*recorder
	hold, readOnly string
	held           chan struct{}
	release        chan struct{}
	once           sync.Once
}

func (h *slowHook) Handle(a *Activity) Verdict {
	if a.Op == OpCloseWrite && a.Path == h.hold {
		h.once.Do(func() { close(h.held) })
		<-h.release
	}
	return h.recorder.Handle(a)
}

func (h *slowHook) Prejudge(a *Activity) bool {
	return a.Size == 0 || a.Path == h.readOnly
}

// TestPrejudgedOpensDoNotWaitForTheHandler: while the hook is still
// handling a completed write, an open it prejudges (for reading) is
// answered at once, and an open it does not (for writing) waits until
// everything queued ahead of it was handled: the order a synchronous stop
// relies on.
func TestPrejudgedOpensDoNotWaitForTheHandler(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	held, reader, writer := filepath.Join(dir, "held.csv"), filepath.Join(dir, "read.csv"), filepath.Join(dir, "write.csv")
	for _, p := range []string{reader, writer} {
		if err := os.WriteFile(p, []byte("id,amount\n1,2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := &slowHook{recorder: &recorder{}, hold: held, readOnly: reader, held: make(chan struct{}), release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(h.release)
		}
	}
	t.Cleanup(release) // never leave the source blocked
	startWith(t, BackendFanotify, dir, h, h.recorder)

	sh(t, "echo 1,2 > "+held)
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the hook never saw the held file's completed write")
	}
	// The reader is answered while the handler is held.
	read := exec.Command("/bin/cat", reader)
	done := make(chan error, 1)
	go func() { done <- read.Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cat: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an open for reading waited for the handler")
	}
	// The writer is not.
	write := exec.Command("/bin/sh", "-c", "echo 3,4 >> "+writer)
	wdone := make(chan error, 1)
	if err := write.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { wdone <- write.Wait() }()
	select {
	case err := <-wdone:
		t.Fatalf("an open for writing was answered while the handler was held (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	release()
	select {
	case err := <-wdone:
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer was never answered")
	}
	// The hook still saw both opens, the prejudged one marked answered.
	h.waitEvent(t, OpCloseWrite, writer)
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range h.acts {
		if a.Op == OpOpen && (a.Path == reader || a.Path == writer) {
			seen[a.Path] = a.Answered
		}
	}
	if answered, ok := seen[reader]; !ok || !answered {
		t.Errorf("the reader's open: seen %v, answered %v; want seen and answered", ok, answered)
	}
	if answered, ok := seen[writer]; !ok || answered {
		t.Errorf("the writer's open: seen %v, answered %v; want seen and not answered early", ok, answered)
	}
}
