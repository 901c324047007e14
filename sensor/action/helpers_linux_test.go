package action

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/sensor/response"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (signals other users' processes, chown, nftables); CI runs as root")
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// copyBinary copies src to dst (mode 0755), appending extra bytes: an ELF
// runs the same with trailing data, and its digest becomes unique.
func copyBinary(t *testing.T, src, dst string, extra []byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(extra); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// started is a process the test started and owns.
type started struct {
	cmd      *exec.Cmd
	pid      int
	done     chan error
	launched time.Time // just before the fork: what the process source would stamp
}

// start runs bin with args and waits until the kernel shows the new
// executable (after exec, not the forked copy of the test binary).
func start(t *testing.T, bin string, args ...string) *started {
	t.Helper()
	// A binary copied moments ago can still be open for writing in a
	// child another parallel test is forking (the fd lives until that
	// child's exec): ETXTBSY, Go issue 22315. Retry briefly.
	var cmd *exec.Cmd
	var launched time.Time
	for i := 0; ; i++ {
		cmd = exec.Command(bin, args...)
		launched = time.Now()
		err := cmd.Start()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ETXTBSY) || i == 50 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := &started{cmd: cmd, pid: cmd.Process.Pid, done: make(chan error, 1), launched: launched}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Only processes this test started, by pid, with their trees.
		if pids, err := response.Descendants("/proc", s.pid); err == nil {
			for _, p := range pids {
				if p != os.Getpid() && p > 1 {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
	})
	want, _ := filepath.EvalSymlinks(bin)
	waitFor(t, "exec of "+bin, func() bool {
		exe, err := os.Readlink(filepath.Join("/proc", itoa(s.pid), "exe"))
		return err == nil && exe == want
	})
	return s
}

func itoa(i int) string { return pidStrings([]int{i})[0] }

// startMilli is the start time a kill-switch command would name: the
// fork time the process source stamps on the exec event, here the moment
// just before the fork, independent of the /proc reading under test.
func (s *started) startMilli(t *testing.T) int64 {
	t.Helper()
	return s.launched.UnixMilli()
}

// killedBySIGKILL waits for the process to end and checks the signal.
func (s *started) killedBySIGKILL(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("pid %d ended with %v, want SIGKILL", s.pid, err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("pid %d ended with %v, want SIGKILL", s.pid, ws)
		}
		s.done <- err // keep it readable for cleanup
	case <-time.After(5 * time.Second):
		t.Fatalf("pid %d not killed within 5s", s.pid)
	}
}

// alive reports whether the process still runs (not stopped, not dead).
func (s *started) alive(t *testing.T) bool {
	t.Helper()
	return running(s.pid)
}

func running(pid int) bool {
	st, err := response.ReadStat("/proc", pid)
	return err == nil && st.State != 'Z' && st.State != 'X' && st.State != 'T' && st.State != 't'
}

// waitDead waits until pid is gone or a zombie (a grandchild may be
// reparented to an init that reaps it late).
func waitDead(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, "death of pid "+itoa(pid), func() bool {
		st, err := response.ReadStat("/proc", pid)
		return err != nil || st.State == 'Z' || st.State == 'X'
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
