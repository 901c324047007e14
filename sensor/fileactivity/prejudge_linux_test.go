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
// the one file the test opens for reading is allowed at once, an empty
// file only when nothing is queued ahead of its open.
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
	return a.Size == 0 && !a.Behind || a.Path == h.readOnly
}

// TestPrejudgedOpensDoNotWaitForTheHandler: while the hook is still
// handling a completed write, an open it prejudges (for reading) is
// answered at once, and an open it does not (for writing, or of a new
// file: marked Behind) waits until everything queued ahead of it was
// handled: the order a synchronous stop relies on.
func TestPrejudgedOpensDoNotWaitForTheHandler(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	held, reader, writer, created := filepath.Join(dir, "held.csv"), filepath.Join(dir, "read.csv"), filepath.Join(dir, "write.csv"), filepath.Join(dir, "new.csv")
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
	// The writer is not, and neither is the creator of a new (empty)
	// file: its open is behind the held write.
	wait := map[string]chan error{}
	for name, cmd := range map[string]string{"an open for writing": "echo 3,4 >> " + writer, "an open of a new file": ": > " + created} {
		c := exec.Command("/bin/sh", "-c", cmd)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		wait[name] = done
		go func() { done <- c.Wait() }()
	}
	for name, done := range wait {
		select {
		case err := <-done:
			t.Fatalf("%s was answered while the handler was held (%v)", name, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	release()
	for name, done := range wait {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was never answered", name)
		}
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
