package kernel

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Three ways past the file tripwires for an attacker who read tripwire.c:
// truncate(2) by path (no open at all), open_by_handle_at(2) (no path at
// all) and paths the kernel read only in part or compared as spelled
// (padded past the read buffer, "/./" before a guarded root's end, a
// working directory deeper than the walk). The helper below (this test
// binary run again) makes the raw syscalls, one process per scene.

const gapHelperEnv = "TILLWATCH_TEST_GAPS"

// TestGapHelper is the helper process, not a test: it runs only with
// gapHelperEnv set to "OP\x1fWAIT\x1fCWD\x1fARG..." and, with WAIT "1",
// first waits for a line on stdin (so the test can taint it), changes to
// CWD unless empty, then for each ARG:
//
//	truncate: truncate(ARG, 0)
//	open:     open(ARG, O_WRONLY|O_CREAT|O_TRUNC)
//	deep:     the first ARG is a number of levels: makes and enters that
//	          many nested folders "d" (no path is long enough to name them
//	          at once), then opens the other ARGs there as open does
//	handle-w, handle-r: name_to_handle_at(ARG), then open_by_handle_at
//	          for writing or reading, the mount given by ARG's folder.
//	uring:    io_uring_setup(8) (ARG ignored), then close the ring.
func TestGapHelper(t *testing.T) {
	spec := os.Getenv(gapHelperEnv)
	if spec == "" {
		t.Skip("helper process for the tripwire gap tests")
	}
	f := strings.Split(spec, "\x1f")
	op, wait, cwd, args := f[0], f[1], f[2], f[3:]
	if wait == "1" {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if cwd != "" {
		if err := os.Chdir(cwd); err != nil {
			t.Fatal(err)
		}
	}
	if op == "deep" { // ARG 0 levels of "d" made and entered one by one; then open
		n, err := strconv.Atoi(args[0])
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := os.Mkdir("d", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chdir("d"); err != nil {
				t.Fatal(err)
			}
		}
		op, args = "open", args[1:]
	}
	for _, a := range args {
		var err error
		switch op {
		case "truncate":
			err = unix.Truncate(a, 0)
		case "open":
			var fd int
			if fd, err = unix.Open(a, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644); err == nil {
				unix.Close(fd)
			}
		case "handle-w", "handle-r":
			err = byHandle(a, op == "handle-w")
		case "uring":
			var params [120]byte // struct io_uring_params, zeroed
			fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&params[0])), 0)
			if errno != 0 {
				err = fmt.Errorf("io_uring_setup: %w", errno)
				break
			}
			unix.Close(int(fd))
		default:
			t.Fatalf("unknown op %q", op)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", op, a, err)
		}
	}
}

func byHandle(p string, write bool) error {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
	if err != nil {
		return fmt.Errorf("name_to_handle_at: %w", err)
	}
	mfd, err := unix.Open(filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	flags := unix.O_RDONLY
	if write {
		flags = unix.O_WRONLY
	}
	fd, err := unix.OpenByHandleAt(mfd, h, flags)
	if err != nil {
		return fmt.Errorf("open_by_handle_at: %w", err)
	}
	return unix.Close(fd)
}

// gapProc is one helper process.
type gapProc struct {
	c     *exec.Cmd
	out   *strings.Builder
	done  chan struct{}
	state *os.ProcessState
}

// startGap starts the helper; taint, if set, is called with its pid before
// it acts. The test's cleanup kills it if still running (stopped or not).
func startGap(t *testing.T, taint func(pid int), op, cwd string, args ...string) *gapProc {
	t.Helper()
	wait := "0"
	if taint != nil {
		wait = "1"
	}
	c := exec.Command(os.Args[0], "-test.run=^TestGapHelper$", "-test.count=1")
	c.Env = append(os.Environ(), gapHelperEnv+"="+strings.Join(append([]string{op, wait, cwd}, args...), "\x1f"))
	p := &gapProc{c: c, out: &strings.Builder{}, done: make(chan struct{})}
	c.Stdout, c.Stderr = p.out, p.out
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.Wait(); p.state = c.ProcessState; close(p.done) }()
	t.Cleanup(func() { c.Process.Kill(); <-p.done })
	if taint != nil {
		taint(c.Process.Pid)
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	return p
}

// exited waits (bounded) for the helper's end and returns its state.
func (p *gapProc) exited(t *testing.T, bound time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.state
	case <-time.After(bound):
		t.Fatalf("helper did not end within %s (stopped: %v): %s", bound, stoppedState(p.c.Process.Pid), p.out)
		return nil
	}
}

// finishes fails the test unless the helper ends by itself with status 0.
func (p *gapProc) finishes(t *testing.T) {
	t.Helper()
	if st := p.exited(t, 30*time.Second); !st.Success() {
		t.Fatalf("helper: %v: %s", st, p.out)
	}
}

// killed fails the test unless the helper dies of SIGKILL.
func (p *gapProc) killed(t *testing.T) {
	t.Helper()
	st := p.exited(t, 30*time.Second)
	ws, ok := st.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended %v, want killed by SIGKILL: %s", st, p.out)
	}
}

// stoppedFor waits for the helper to be stopped and returns its entry.
func (p *gapProc) stoppedFor(t *testing.T, l *Layer, want Reason) *Stopped {
	t.Helper()
	pid := p.c.Process.Pid
	waitFor(t, 20*time.Second, "the helper to be stopped", func() bool {
		select {
		case <-p.done:
			t.Fatalf("helper ended (%v) instead of being stopped: %s", p.state, p.out)
		default:
		}
		return stoppedState(pid)
	})
	s := stoppedEntry(t, l, pid)
	if s == nil || s.Reason != want {
		t.Fatalf("stopped entry %+v, want a %s stop of pid %d", s, want, pid)
	}
	return s
}

// shortDir makes a folder under /tmp with a short name (a guarded root
// must fit the kernel's key), removed when the test ends.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "kg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func writeFiles(t *testing.T, dir string, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte("plain\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%sf%d", prefix, i)
	}
	return out
}

// fileLayer is one layer per test for the decoy and sensor-path
// subtests (a Load costs seconds): enforcing, decoys armed, no burst
// tripwire (a decoy stop then holds no family, so subtests do not
// interact). Each subtest adds its own decoy and sensor file.
type fileLayer struct {
	*Layer
	base   string   // the decoys' folders are made here
	decoys []string // planted decoy paths, all kept armed by identity
}

func newFileLayer(t *testing.T) *fileLayer {
	t.Helper()
	// Made before the layer, so removed after it is gone: removing a
	// decoy while it is armed would stop this test process.
	base := shortDir(t)
	return &fileLayer{Layer: newTestLayer(t, Config{Enforce: true, Decoys: true}), base: base}
}

// decoy plants a decoy with a unique name in a folder of its own and arms
// it by name and identity; it returns its name and path.
func (l *fileLayer) decoy(t *testing.T) (string, string) {
	t.Helper()
	name := "0000 Accounts " + unique(t) + ".pdf"
	dir, err := os.MkdirTemp(l.base, "d")
	if err != nil {
		t.Fatal(err)
	}
	p := writeFiles(t, dir, name)[0]
	if err := l.AddDecoys(name); err != nil {
		t.Fatal(err)
	}
	l.decoys = append(l.decoys, p)
	if err := l.SetDecoyFiles(l.decoys...); err != nil {
		t.Fatal(err)
	}
	return name, p
}

// sensorFile makes a file named like the sensor's config and registers
// its name as a target (guarded against tainted writers).
func (l *fileLayer) sensorFile(t *testing.T) string {
	t.Helper()
	name := "tw-cfg-" + unique(t) + ".yaml"
	p := writeFiles(t, shortDir(t), name)[0]
	if err := l.AddTargets(name); err != nil {
		t.Fatal(err)
	}
	return p
}

func taintWith(t *testing.T, l *Layer) func(int) {
	return func(pid int) {
		if err := l.TaintAgent(pid); err != nil {
			t.Fatal(err)
		}
	}
}

func unchanged(p string) bool {
	b, err := os.ReadFile(p)
	return err == nil && string(b) == "plain\n"
}

// TestTruncateTripwires: truncate(2) by path is a write-open of that path
// to every file tripwire. "decoy", "sensor" and "burst" failed before
// sys_enter_truncate was attached: the helper truncated and finished.
func TestTruncateTripwires(t *testing.T) {
	l := newFileLayer(t)
	t.Run("decoy", func(t *testing.T) {
		name, p := l.decoy(t)
		h := startGap(t, nil, "truncate", "", p)
		if s := h.stoppedFor(t, l.Layer, ReasonDecoyOpen); s.Name != name {
			t.Errorf("stop named %q, want %q", s.Name, name)
		}
	})
	t.Run("sensor", func(t *testing.T) {
		startGap(t, taintWith(t, l.Layer), "truncate", "", l.sensorFile(t)).killed(t)
	})
	t.Run("sensor-honest", func(t *testing.T) { // untainted: an admin may
		startGap(t, nil, "truncate", "", l.sensorFile(t)).finishes(t)
	})
	t.Run("burst", func(t *testing.T) {
		root, out := shortDir(t), shortDir(t)
		files := writeFiles(t, root, numbered("", 40)...)
		outside := writeFiles(t, out, numbered("", 40)...)
		bl := newBurstLayer(t, root)
		// Outside the root first: never counted, so no count is
		// left for the helper's parent (this test) either.
		startGap(t, nil, "truncate", "", outside...).finishes(t)
		h := startGap(t, nil, "truncate", "", files...)
		h.stoppedFor(t, bl, ReasonBurst)
		n := 0
		for _, f := range files {
			if !unchanged(f) {
				n++
			}
		}
		if n > 8 {
			t.Errorf("%d files truncated before the stop, want at most the threshold 8", n)
		}
	})
}

// TestOpenByHandleTripwires: open_by_handle_at(2) for writing names no
// path. A handle naming a planted decoy (by inode number and device) is a
// decoy stop for any process; any handle opened for writing by a process
// under an RMM agent is a stop the sensor judges; an honest process
// writing another file by handle, or reading a decoy by handle, is let
// be. "decoy" and "tainted" failed before sys_enter_open_by_handle_at was
// attached (the helper finished).
func TestOpenByHandleTripwires(t *testing.T) {
	probe := writeFiles(t, shortDir(t), "probe")[0]
	if _, _, err := unix.NameToHandleAt(unix.AT_FDCWD, probe, 0); err != nil {
		t.Skipf("no file handles on /tmp: %v", err)
	}
	l := newFileLayer(t)
	t.Run("decoy", func(t *testing.T) {
		name, p := l.decoy(t)
		h := startGap(t, nil, "handle-w", "", p)
		if s := h.stoppedFor(t, l.Layer, ReasonDecoyOpen); s.Name != name {
			t.Errorf("stop named %q, want %q", s.Name, name)
		}
	})
	t.Run("decoy-read", func(t *testing.T) {
		_, p := l.decoy(t)
		startGap(t, nil, "handle-r", "", p).finishes(t)
	})
	t.Run("tainted", func(t *testing.T) {
		p := writeFiles(t, shortDir(t), "plain.txt")[0]
		startGap(t, taintWith(t, l.Layer), "handle-w", "", p).stoppedFor(t, l.Layer, ReasonHandleWrite)
	})
	t.Run("honest", func(t *testing.T) {
		// Decoys armed elsewhere, and an honest writer by handle of
		// another file: let be.
		p := writeFiles(t, shortDir(t), "plain.txt")[0]
		startGap(t, nil, "handle-w", "", p).finishes(t)
	})
}

// pad spells dir with n "/." components after it: the same folder, as
// long a path as wanted.
func pad(dir string, n int) string { return dir + strings.Repeat("/.", n) }

// TestLongPathTripwires: paths longer than what the kernel used to read
// (256 bytes), spelled with "/./" before a guarded root's end, or written
// from a working directory deeper than the walk (64 levels) went past the
// decoy, sensor-path and burst checks; a ".." out of a guarded root was
// counted by its prefix. Each of these failed before: "decoy", "sensor",
// "burst", "deep" and "deeper-tainted" finished unstopped, "dotdot" was
// stopped. "deeper" is the limit left: 2,048 levels.
func TestLongPathTripwires(t *testing.T) {
	l := newFileLayer(t)
	t.Run("decoy", func(t *testing.T) {
		name, p := l.decoy(t)
		long := pad(filepath.Dir(p), 200) + "/" + name // 400+ bytes
		h := startGap(t, nil, "open", "", long)
		if s := h.stoppedFor(t, l.Layer, ReasonDecoyOpen); s.Name != name {
			t.Errorf("stop named %q, want %q", s.Name, name)
		}
	})
	t.Run("sensor", func(t *testing.T) {
		p := l.sensorFile(t)
		long := pad(filepath.Dir(p), 200) + "/" + filepath.Base(p)
		startGap(t, taintWith(t, l.Layer), "open", "", long).killed(t)
	})
	t.Run("burst", func(t *testing.T) {
		// "/tmp/./././.../kgXXXX/f0": "/./" before the root's end,
		// and longer than 256 bytes.
		root := shortDir(t)
		bl := newBurstLayer(t, root)
		paths := numbered(pad("/tmp", 150)+"/"+filepath.Base(root)+"/", 40)
		startGap(t, nil, "open", "", paths...).stoppedFor(t, bl, ReasonBurst)
		if n := countFiles(t, root); n > 8 {
			t.Errorf("%d files written before the stop, want at most the threshold 8", n)
		}
	})
	t.Run("deep", func(t *testing.T) {
		// Relative names from a working directory 100 levels down.
		root := shortDir(t)
		deep := root + strings.Repeat("/d", 100)
		if err := os.MkdirAll(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		bl := newBurstLayer(t, root)
		startGap(t, nil, "open", deep, numbered("", 40)...).stoppedFor(t, bl, ReasonBurst)
		if n := countFiles(t, deep); n > 8 {
			t.Errorf("%d files written before the stop, want at most the threshold 8", n)
		}
	})
	// Deeper than the walk (WALK_MAX, 2,048 levels) the folder is not
	// found: an untainted writer there is not counted (the limit left, and
	// what keeps the host's other processes uncounted), a tainted one is.
	// One layer: the untainted helper adds no count anywhere.
	t.Run("deeper", func(t *testing.T) {
		root := shortDir(t)
		for _, d := range []string{"u", "t"} {
			if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		bl := newBurstLayer(t, root)
		args := append([]string{"2100"}, numbered("", 40)...)
		startGap(t, nil, "deep", filepath.Join(root, "u"), args...).finishes(t)
		startGap(t, taintWith(t, bl), "deep", filepath.Join(root, "t"), args...).stoppedFor(t, bl, ReasonBurst)
	})
	t.Run("dotdot", func(t *testing.T) {
		// "ROOT/../OUT/f0" lands outside the root: host safety.
		parent := shortDir(t)
		root, out := filepath.Join(parent, "r"), filepath.Join(parent, "o")
		for _, d := range []string{root, out} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		newBurstLayer(t, root)
		startGap(t, nil, "open", "", numbered(root+"/../o/", 40)...).finishes(t)
		if n := countFiles(t, out); n != 40 {
			t.Errorf("%d files written outside the root, want 40", n)
		}
	})
}

// TestIOUringTripwire: a ring's opens, writes, renames and unlinks pass
// no syscall tracepoint, so a process under an RMM agent that sets one up
// is stopped for the sensor's judgement (it ends the tree). The agent
// itself and untainted processes are let be, and so is everyone with the
// tripwire unarmed (kernel.agent_io_uring: allow). "tainted" finished
// unstopped before sys_enter_io_uring_setup was attached.
func TestIOUringTripwire(t *testing.T) {
	if !tracepointExists("syscalls", "sys_enter_io_uring_setup") {
		t.Skip("this kernel has no io_uring")
	}
	if disabled, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); strings.TrimSpace(string(disabled)) == "2" {
		t.Skip("io_uring is disabled on this machine (kernel.io_uring_disabled=2)")
	}
	child := func(l *Layer) func(int) {
		return func(pid int) {
			if err := l.TaintChild(pid, pid); err != nil {
				t.Fatal(err)
			}
		}
	}
	l := newTestLayer(t, Config{Enforce: true, IOUring: true})
	t.Run("tainted", func(t *testing.T) {
		startGap(t, child(l), "uring", "", "-").stoppedFor(t, l, ReasonIOUring)
	})
	t.Run("agent", func(t *testing.T) {
		startGap(t, taintWith(t, l), "uring", "", "-").finishes(t)
	})
	t.Run("honest", func(t *testing.T) {
		startGap(t, nil, "uring", "", "-").finishes(t)
	})
	t.Run("allowed", func(t *testing.T) {
		if err := l.SetConfig(Config{Enforce: true, IOUring: false}); err != nil {
			t.Fatal(err)
		}
		startGap(t, child(l), "uring", "", "-").finishes(t)
	})
}
