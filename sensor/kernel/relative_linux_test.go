package kernel

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Relative paths are counted by the burst tripwire where they land: the
// kernel walks up from the directory they start in (the working directory,
// or a directory descriptor's) and compares the guarded roots' identities.
// The helper below (this test binary run again) makes 40 changes with
// relative names, one syscall each, in a single process.

const relHelperEnv = "TILLWATCH_TEST_RELATIVE"

// TestRelativeHelper is the helper process, not a test: it runs only with
// relHelperEnv set to "MODE HOW DIR PREFIX" (MODE write, rename or unlink;
// HOW cwd: chdir to DIR and use AT_FDCWD, or dirfd: openat(DIR) and use
// the descriptor), each change naming PREFIX+"f<i>" relative to DIR.
func TestRelativeHelper(t *testing.T) {
	spec := os.Getenv(relHelperEnv)
	if spec == "" {
		t.Skip("helper process for the relative-path tests")
	}
	f := strings.Split(spec, "\x1f")
	mode, how, dir, prefix := f[0], f[1], f[2], f[3]
	dfd := unix.AT_FDCWD
	if how == "cwd" {
		if err := os.Chdir(dir); err != nil {
			t.Fatal(err)
		}
	} else {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		dfd = fd
	}
	for i := range 40 {
		name := prefix + "f" + strconv.Itoa(i)
		var err error
		switch mode {
		case "write":
			var fd int
			if fd, err = unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644); err == nil {
				unix.Close(fd)
			}
		case "rename":
			err = unix.Renameat(dfd, name, dfd, prefix+"g"+strconv.Itoa(i))
		case "unlink":
			err = unix.Unlinkat(dfd, name, 0)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", mode, name, err)
		}
	}
}

// startRelative starts the helper; the test's cleanup kills it if still
// running.
func startRelative(t *testing.T, mode, how, dir, prefix string) *exec.Cmd {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^TestRelativeHelper$", "-test.count=1")
	c.Env = append(os.Environ(), relHelperEnv+"="+strings.Join([]string{mode, how, dir, prefix}, "\x1f"))
	out := &strings.Builder{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// waitDone fails the test unless c exits 0 within bound.
func waitDone(t *testing.T, c *exec.Cmd, bound time.Duration, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v: %s", what, err, c.Stdout)
		}
	case <-time.After(bound):
		t.Fatalf("%s did not finish within %s (stopped: %v)", what, bound, stoppedState(c.Process.Pid))
	}
}

// plant creates files f0..f39 in dir. Call it before arming the layer:
// the test process itself would be counted.
func plant(t *testing.T, dir string) {
	t.Helper()
	for i := range 40 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// changed counts the changes mode made in dir (files created, renamed
// to g<i>, or removed).
func changed(t *testing.T, dir, mode string) int {
	t.Helper()
	n := 0
	for i := range 40 {
		_, errF := os.Stat(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		_, errG := os.Stat(filepath.Join(dir, fmt.Sprintf("g%d", i)))
		switch mode {
		case "write":
			if errF == nil {
				n++
			}
		case "rename":
			if errG == nil {
				n++
			}
		case "unlink":
			if os.IsNotExist(errF) {
				n++
			}
		}
	}
	return n
}

// TestBurstCountsRelativePaths: a process that works with relative names
// in a guarded root, from its working directory or through a directory
// descriptor, is stopped at the threshold like one that uses absolute
// paths; resumed, it finishes.
func TestBurstCountsRelativePaths(t *testing.T) {
	for _, mode := range []string{"write", "rename", "unlink"} {
		for _, how := range []string{"cwd", "dirfd"} {
			t.Run(mode+"/"+how, func(t *testing.T) {
				root := t.TempDir()
				if mode != "write" {
					plant(t, root)
				}
				l := newBurstLayer(t, root)
				c := startRelative(t, mode, how, root, "")
				waitFor(t, 20*time.Second, "the helper to be stopped", func() bool { return stoppedState(c.Process.Pid) })
				if n := changed(t, root, mode); n > 8 {
					t.Errorf("%d changes before the stop, want at most the threshold 8", n)
				}
				s := stoppedEntry(t, l, c.Process.Pid)
				if s == nil || s.Reason != ReasonBurst || s.Family != 0 {
					t.Fatalf("stopped entry %+v, want a burst stop of pid %d alone", s, c.Process.Pid)
				}
				if err := l.Resume(*s, time.Minute); err != nil {
					t.Fatal(err)
				}
				waitDone(t, c, 30*time.Second, "the resumed helper")
				if n := changed(t, root, mode); n != 40 {
					t.Errorf("%d changes after the resume, want 40", n)
				}
			})
		}
	}
}

// TestBurstRelativeOutside is the host-wide safety: relative
// names in a folder that is not guarded, from the working directory or a
// directory descriptor, are never counted, with the layer armed on a
// guarded root beside it. So are names that climb out of the guarded root
// with "..": "../other/f1" from the root lands outside it.
func TestBurstRelativeOutside(t *testing.T) {
	// (Subtest names are short: t.TempDir names folders after them.)
	for _, mode := range []string{"write", "rename", "unlink"} {
		for _, how := range []string{"cwd", "dirfd"} {
			t.Run(mode+"/"+how, func(t *testing.T) {
				root, outside := t.TempDir(), t.TempDir()
				if mode != "write" {
					plant(t, outside)
				}
				l := newBurstLayer(t, root)
				c := startRelative(t, mode, how, outside, "")
				waitDone(t, c, 30*time.Second, "the helper outside the guarded root")
				if n := changed(t, outside, mode); n != 40 {
					t.Errorf("%d changes, want 40", n)
				}
				if s := stoppedEntry(t, l, c.Process.Pid); s != nil {
					t.Errorf("stopped entry %+v for a helper outside the guarded root", s)
				}
			})
		}
	}
	t.Run("dotdot", func(t *testing.T) { // out of the root
		parent := t.TempDir()
		root, outside := filepath.Join(parent, "root"), filepath.Join(parent, "other")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		l := newBurstLayer(t, root)
		for _, how := range []string{"cwd", "dirfd"} {
			c := startRelative(t, "write", how, root, "../other/"+how)
			waitDone(t, c, 30*time.Second, "the helper writing out of the root with ..")
			if s := stoppedEntry(t, l, c.Process.Pid); s != nil {
				t.Errorf("%s: stopped entry %+v for names that leave the guarded root", how, s)
			}
		}
		if n := countFiles(t, outside); n != 80 {
			t.Errorf("%d files outside, want 80", n)
		}
	})
}

// TestBurstRelativeDotDotInsideRoot: names that climb with ".." but stay
// inside the guarded root ("../b/f1" from root/a) are counted.
func TestBurstRelativeDotDotInsideRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l := newBurstLayer(t, root)
	c := startRelative(t, "write", "cwd", filepath.Join(root, "a"), "../b/")
	waitFor(t, 20*time.Second, "the helper to be stopped", func() bool { return stoppedState(c.Process.Pid) })
	if n := countFiles(t, filepath.Join(root, "b")); n > 8 {
		t.Errorf("%d files before the stop, want at most 8", n)
	}
	if s := stoppedEntry(t, l, c.Process.Pid); s == nil || s.Reason != ReasonBurst {
		t.Fatalf("stopped entry %+v, want a burst stop", s)
	}
}

// TestBurstRelativeShell: the everyday form, `cd ROOT && for ...; do echo
// x > f$i; done`, one shell with relative names.
func TestBurstRelativeShell(t *testing.T) {
	root := t.TempDir()
	l := newBurstLayer(t, root)
	w := exec.Command("/bin/sh", "-c", `cd "$0" && for i in $(seq 1 40); do echo x > "f$i"; done`, root)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	waitFor(t, 20*time.Second, "the shell to be stopped", func() bool { return stoppedState(w.Process.Pid) })
	if n := countFiles(t, root); n > 8 {
		t.Errorf("%d files before the stop, want at most 8", n)
	}
	if s := stoppedEntry(t, l, w.Process.Pid); s == nil || s.Reason != ReasonBurst {
		t.Fatalf("stopped entry %+v, want a burst stop", s)
	}
}

// TestGuardedRootIDs: arming the burst tripwire records each guarded
// root's identity; standing it down clears them.
func TestGuardedRootIDs(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	cfg := Config{Enforce: true, Burst: true, GuardRoots: []string{a, b, "/", filepath.Join(a, "missing")}}
	l := newTestLayer(t, cfg)
	ids, err := l.GuardedRootIDs()
	if err != nil {
		t.Fatal(err)
	}
	var want []RootID
	for _, d := range []string{a, b} {
		id, err := DirID(d)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if len(ids) != 2 || !(ids[0] == want[0] && ids[1] == want[1] || ids[0] == want[1] && ids[1] == want[0]) {
		t.Errorf("identities %+v, want %+v (not /, not a missing folder)", ids, want)
	}
	cfg.PinDir = l.cfg.PinDir
	cfg.Burst = false
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if ids, err := l.GuardedRootIDs(); err != nil || len(ids) != 0 {
		t.Errorf("identities after standing down %+v (%v), want none", ids, err)
	}
}

// TestBurstRelativeFromAbove: a path that starts above the guarded root
// and names its way down into it (`cd /shop && encrypt data/*`) is counted;
// one that names a neighbour ("database/", "other/") is not.
func TestBurstRelativeFromAbove(t *testing.T) {
	for _, tc := range []struct {
		name, start, prefix string
		counted             bool
	}{
		// Short names: t.TempDir names the folder after the test, and a
		// root longer than 63 bytes is not compared.
		{"down", "", "data/", true},
		{"dots", "", "./data//", true},
		{"up", "other", "../data/", true},
		{"prefix", "", "database/", false},
		{"other", "", "other/", false},
		{"out", "", "data/../other/", false},
	} {
		for _, how := range []string{"cwd", "dirfd"} {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				parent := t.TempDir()
				for _, d := range []string{"data", "database", "other"} {
					if err := os.Mkdir(filepath.Join(parent, d), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				l := newBurstLayer(t, filepath.Join(parent, "data"))
				c := startRelative(t, "write", how, filepath.Join(parent, tc.start), tc.prefix)
				if !tc.counted {
					waitDone(t, c, 30*time.Second, "the helper writing outside the root")
					if s := stoppedEntry(t, l, c.Process.Pid); s != nil {
						t.Errorf("stopped entry %+v for names outside the guarded root", s)
					}
					return
				}
				waitFor(t, 20*time.Second, "the helper to be stopped", func() bool { return stoppedState(c.Process.Pid) })
				if n := countFiles(t, filepath.Join(parent, "data")); n > 8 {
					t.Errorf("%d files before the stop, want at most 8", n)
				}
				if s := stoppedEntry(t, l, c.Process.Pid); s == nil || s.Reason != ReasonBurst {
					t.Fatalf("stopped entry %+v, want a burst stop", s)
				}
			})
		}
	}
}

// TestBurstRelativeInAMountInsideRoot: a filesystem mounted inside the
// guarded root (a share, a data partition) is inside it: the walk up from a
// folder in it crosses to the folder it is mounted on.
func TestBurstRelativeInAMountInsideRoot(t *testing.T) {
	for _, how := range []string{"cwd", "dirfd"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			share := filepath.Join(root, "share")
			if err := os.Mkdir(share, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tillwatch-test", share, "tmpfs", 0, "size=4m"); err != nil {
				t.Skipf("mounting a tmpfs: %v", err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(share, unix.MNT_DETACH); err != nil {
					t.Errorf("unmounting %s: %v", share, err)
				}
			})
			l := newBurstLayer(t, root)
			c := startRelative(t, "write", how, share, "")
			waitFor(t, 20*time.Second, "the helper to be stopped", func() bool { return stoppedState(c.Process.Pid) })
			if n := countFiles(t, share); n > 8 {
				t.Errorf("%d files before the stop, want at most 8", n)
			}
			if s := stoppedEntry(t, l, c.Process.Pid); s == nil || s.Reason != ReasonBurst {
				t.Fatalf("stopped entry %+v, want a burst stop", s)
			}
		})
	}
}
