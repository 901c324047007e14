package fileguard

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blockers parks Python threads in syscalls the intent reader must tell
// apart. Each thread is named by a word on the command line:
//
//	read   open(2) of a FIFO for reading (blocks until a writer comes)
//	write  open(2) of a FIFO for writing (blocks until a reader comes)
//	sleep  time.sleep (clock_nanosleep: opens nothing)
//	flock  flock(2) on a file this script holds locked (a syscall the
//	       reader does not know)
//
// The first word is run by the main thread (the thread-group leader),
// after the others have started.
const blockers = `
import fcntl, os, sys, threading, time
d, words = sys.argv[1], sys.argv[2:]
held = open(os.path.join(d, "lock"), "w")
fcntl.flock(held, fcntl.LOCK_EX)
def park(i, w):
    p = os.path.join(d, "fifo%d" % i)
    if w == "read":
        os.open(p, os.O_RDONLY)
    elif w == "write":
        os.open(p, os.O_WRONLY)
    elif w == "sleep":
        time.sleep(3600)
    elif w == "flock":
        f = open(os.path.join(d, "lock"), "w")
        fcntl.flock(f, fcntl.LOCK_EX)
for i, w in enumerate(words):
    os.mkfifo(os.path.join(d, "fifo%d" % i))
for i, w in enumerate(words[1:], 1):
    threading.Thread(target=park, args=(i, w), daemon=True).start()
park(0, words[0])
`

// TestIntentReaderBelievesAReadOnlyWhenNoOtherThreadCouldOpen: fanotify
// names the process, not the thread that opened. A process that parks its
// leader in an open for reading while another thread opens for writing
// read as a reader before (a write-open of a decoy was let through as a
// backup's read, and a file opened for writing was not sampled first).
func TestIntentReaderBelievesAReadOnlyWhenNoOtherThreadCouldOpen(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("reading another process's syscall needs root")
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("no list of sleeping syscalls for " + runtime.GOARCH)
	}
	py := needPython(t)
	for _, tc := range []struct {
		threads string
		want    intent
	}{
		{"read", intentRead},
		{"write", intentWrite},
		{"read sleep", intentRead},
		{"read read", intentRead},
		{"read write", intentWrite},       // the spoof
		{"sleep write", intentWrite},      // the leader in no open
		{"read flock", intentUnknown},     // a thread in a syscall the reader does not know
		{"read sleep write", intentWrite}, // the writer behind a sleeper
	} {
		t.Run(tc.threads, func(t *testing.T) {
			t.Parallel()
			words := strings.Fields(tc.threads)
			pid := parkThreads(t, py, words)
			r := newIntentReader("/proc")
			if got := r.read(pid); got != tc.want {
				t.Errorf("threads %q read as %v, want %v", tc.threads, got, tc.want)
			}
		})
	}
}

// parkThreads starts blockers with words and waits until every thread is
// blocked where it was sent.
func parkThreads(t *testing.T, py string, words []string) int {
	t.Helper()
	cmd := exec.Command(py, "-c", blockers, t.TempDir())
	cmd.Args = append(cmd.Args, words...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	want := map[string]int{}
	for _, w := range words {
		want[parkedIn(w)]++
	}
	task := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "task")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := map[string]int{}
		ents, _ := os.ReadDir(task)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(task, e.Name(), "syscall"))
			if f := strings.Fields(string(b)); len(f) > 0 {
				got[f[0]]++
			}
		}
		if len(ents) == len(words) && equalCounts(got, want) {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads %q never parked: syscalls %v, want %v", words, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parkedIn is the syscall number a blockers word ends in on this machine.
func parkedIn(word string) string {
	nr := map[string]map[string]int{
		"amd64": {"read": syscall.SYS_OPENAT, "write": syscall.SYS_OPENAT, "sleep": 230, "flock": syscall.SYS_FLOCK},
		"arm64": {"read": 56, "write": 56, "sleep": 115, "flock": 32},
	}[runtime.GOARCH][word]
	return strconv.Itoa(nr)
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestStatFields(t *testing.T) {
	t.Parallel()
	line := "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 12345 1000 200\n"
	for _, tc := range []struct {
		line            string
		parent, threads int
	}{
		{line, 17, 3},
		{"4242 (short) S 17", 17, 0},
		{"no parenthesis", 0, 0},
		{"", 0, 0},
	} {
		if got := parseParent(tc.line); got != tc.parent {
			t.Errorf("parseParent(%q) = %d, want %d", tc.line, got, tc.parent)
		}
		if got := parseThreads(tc.line); got != tc.threads {
			t.Errorf("parseThreads(%q) = %d, want %d", tc.line, got, tc.threads)
		}
	}
	// This process, read live.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	if got := parseParent(string(b)); got != os.Getppid() {
		t.Errorf("parent of this test = %d, want %d", got, os.Getppid())
	}
	if got := parseThreads(string(b)); got < 1 {
		t.Errorf("threads of this test = %d", got)
	}
}
