package action

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/response"
)

func killExec(t *testing.T, root string, protected ...int) *Executor {
	t.Helper()
	e, err := New(Options{StateDir: t.TempDir(), AllowedRoots: []string{root}, Protected: protected})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// anyStart is a well-formed start time for cases decided before the start
// time is compared (protected, kernel thread, absent, zombie).
const anyStart = "1700000000000"

func kill(e *Executor, params map[string]string) Result {
	return e.Run(context.Background(), Request{CommandID: "cmd-kill", Action: ActKillProcess, Params: params})
}

func TestKillByPIDWithStartTime(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	s := start(t, "/bin/sleep", "30")
	e := killExec(t, t.TempDir())
	pid := strconv.Itoa(s.pid)

	wrong := strconv.FormatInt(s.startMilli(t)-3_600_000, 10)
	res := kill(e, map[string]string{"pid": pid, "start_time": wrong})
	if res.Status != StatusNoop || !strings.Contains(res.Detail, "another process") || !s.alive(t) {
		t.Fatalf("wrong start_time: %+v (alive %v); want noop and the process untouched", res, s.alive(t))
	}

	res = kill(e, map[string]string{"pid": pid, "start_time": strconv.FormatInt(s.startMilli(t), 10)})
	if res.Status != StatusOK || !slices.Equal(res.Affected, []string{pid}) {
		t.Fatalf("kill by pid: %+v", res)
	}
	s.killedBySIGKILL(t)

	if res := kill(e, map[string]string{"pid": pid, "start_time": strconv.FormatInt(s.startMilli(t), 10)}); res.Status != StatusNoop {
		t.Errorf("killing a reaped pid again: %+v, want noop", res)
	}
}

func TestKillByPIDTakesTheTree(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	s := start(t, "/bin/sh", "-c", "sleep 30 & sleep 30 & wait")
	var kids []int
	waitFor(t, "two children", func() bool {
		kids, _ = response.Descendants("/proc", s.pid)
		return len(kids) >= 3
	})
	e := killExec(t, t.TempDir())
	res := kill(e, map[string]string{"pid": strconv.Itoa(s.pid), "start_time": strconv.FormatInt(s.startMilli(t), 10)})
	if res.Status != StatusOK || len(res.Affected) < 3 || res.Affected[0] != strconv.Itoa(s.pid) {
		t.Fatalf("kill tree: %+v", res)
	}
	s.killedBySIGKILL(t)
	for _, k := range kids[1:] {
		waitDead(t, k)
	}
}

func TestKillByName(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	name := "twk" + randHex(t, 4) // unique, under the 15-byte comm limit
	bin := filepath.Join(dir, name)
	copyBinary(t, "/bin/sleep", bin, nil)
	a, b := start(t, bin, "30"), start(t, bin, "30")
	other := start(t, "/bin/sleep", "30")
	e := killExec(t, dir)
	res := kill(e, map[string]string{"name": name})
	slices.Sort(res.Affected)
	want := []string{strconv.Itoa(a.pid), strconv.Itoa(b.pid)}
	slices.Sort(want)
	if res.Status != StatusOK || !slices.Equal(res.Affected, want) {
		t.Fatalf("kill by name: %+v, want pids %v", res, want)
	}
	a.killedBySIGKILL(t)
	b.killedBySIGKILL(t)
	if !other.alive(t) {
		t.Error("a process with another name was killed")
	}
	if res := kill(e, map[string]string{"name": name}); res.Status != StatusNoop {
		t.Errorf("nothing left to kill: %+v, want noop", res)
	}
}

func TestKillBySHA256(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	extra := []byte("tillwatch-test-" + randHex(t, 16))
	bin := filepath.Join(dir, "twh"+randHex(t, 4))
	copyBinary(t, "/bin/sleep", bin, extra)
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	s := start(t, bin, "30")
	plain := start(t, "/bin/sleep", "30") // same code, other digest
	e := killExec(t, dir)
	res := kill(e, map[string]string{"sha256": hex.EncodeToString(sum[:])})
	if res.Status != StatusOK || !slices.Equal(res.Affected, []string{strconv.Itoa(s.pid)}) {
		t.Fatalf("kill by sha256: %+v", res)
	}
	s.killedBySIGKILL(t)
	if !plain.alive(t) {
		t.Error("a process with another digest was killed")
	}
	if e.hashes.Len() == 0 {
		t.Error("executable digests are not cached")
	}
}

func TestKillByPath(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	root, outside := t.TempDir(), t.TempDir()
	bin := filepath.Join(root, "twp"+randHex(t, 4))
	copyBinary(t, "/bin/sleep", bin, nil)
	obin := filepath.Join(outside, "twp"+randHex(t, 4))
	copyBinary(t, "/bin/sleep", obin, nil)
	s, o := start(t, bin, "30"), start(t, obin, "30")
	e := killExec(t, root)
	if res := kill(e, map[string]string{"path": obin}); res.Status != StatusRefused || !strings.Contains(res.Detail, "not under an allowed root") {
		t.Fatalf("kill by path outside the roots: %+v, want refused", res)
	}
	// A symlink inside the root to a binary outside it resolves outside.
	link := filepath.Join(root, "link")
	if err := os.Symlink(obin, link); err != nil {
		t.Fatal(err)
	}
	if res := kill(e, map[string]string{"path": link}); res.Status != StatusRefused {
		t.Fatalf("kill through a symlink leaving the root: %+v, want refused", res)
	}
	res := kill(e, map[string]string{"path": bin})
	if res.Status != StatusOK || !slices.Equal(res.Affected, []string{strconv.Itoa(s.pid)}) {
		t.Fatalf("kill by path: %+v", res)
	}
	s.killedBySIGKILL(t)
	if !o.alive(t) {
		t.Error("the process outside the roots was killed")
	}
}

func TestKillRefusesProtectedTargets(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	name := "twq" + randHex(t, 4)
	bin := filepath.Join(dir, name)
	copyBinary(t, "/bin/sleep", bin, nil)
	s := start(t, bin, "30")
	e := killExec(t, dir, s.pid)
	cases := map[string]string{
		"configured protected pid": strconv.Itoa(s.pid),
		"pid 1":                    "1",
		"the sensor itself":        strconv.Itoa(os.Getpid()),
	}
	if pp := os.Getppid(); pp > 1 {
		cases["the sensor's parent"] = strconv.Itoa(pp)
	}
	for name, pid := range cases {
		if res := kill(e, map[string]string{"pid": pid, "start_time": anyStart}); res.Status != StatusRefused || !strings.Contains(res.Detail, "protected") {
			t.Errorf("%s: %+v, want refused as protected", name, res)
		}
	}
	// By name (unique to this test), the only match is protected: refused.
	if res := kill(e, map[string]string{"name": name}); res.Status != StatusRefused || !strings.Contains(res.Detail, "protected") {
		t.Errorf("kill by name of a protected process: %+v, want refused", res)
	}
	if !s.alive(t) {
		t.Fatal("a protected process was killed")
	}
}

func TestKillRefusesKernelThreads(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	e := killExec(t, t.TempDir())
	ps, err := e.procs()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ps, func(p proc) bool { return p.Kernel && !e.isProtected(p.PID) })
	if i < 0 {
		t.Skip("no kernel thread visible in this pid namespace")
	}
	if res := kill(e, map[string]string{"pid": strconv.Itoa(ps[i].PID), "start_time": anyStart}); res.Status != StatusRefused || !strings.Contains(res.Detail, "kernel thread") {
		t.Fatalf("kernel thread %d (%s): %+v, want refused", ps[i].PID, ps[i].Comm, res)
	}
}

func TestKillPIDNotRunning(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	e := killExec(t, t.TempDir())
	// Above the pid_max of this test machine, below the parser's bound.
	pid := maxPID - 1
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Skip("pid in use")
	}
	if res := kill(e, map[string]string{"pid": strconv.Itoa(pid), "start_time": anyStart}); res.Status != StatusNoop {
		t.Fatalf("absent pid: %+v, want noop", res)
	}
}

// TestKillZombieIsNoop: a zombie has exited already; signalling it would
// report a kill that did nothing.
func TestKillZombieIsNoop(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	name := "twz" + randHex(t, 4)
	bin := filepath.Join(dir, name)
	copyBinary(t, "/bin/true", bin, nil)
	// sleep never waits for the child sh left behind: it stays a zombie.
	parent := exec.Command("/bin/sh", "-c", bin+" & exec /bin/sleep 30")
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	var zombie int
	waitFor(t, "a zombie child", func() bool {
		kids, _ := response.Descendants("/proc", parent.Process.Pid)
		for _, k := range kids[1:] {
			if st, err := response.ReadStat("/proc", k); err == nil && st.State == 'Z' {
				zombie = k
				return true
			}
		}
		return false
	})
	e := killExec(t, dir)
	if res := kill(e, map[string]string{"pid": strconv.Itoa(zombie), "start_time": anyStart}); res.Status != StatusNoop || !strings.Contains(res.Detail, "zombie") {
		t.Errorf("kill a zombie by pid: %+v, want noop", res)
	}
	if res := kill(e, map[string]string{"name": name}); res.Status != StatusNoop {
		t.Errorf("kill a zombie by name: %+v, want noop", res)
	}
}
