package response

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tillwatch/tillwatch/internal/event"
)

// Stat is what the tree operations need of a process, from /proc/PID/stat.
type Stat struct {
	PID   int
	PPID  int
	State byte
	// Start is the start time in clock ticks since boot: with the pid it
	// identifies the process across pid reuse.
	Start uint64
}

// ReadStat parses procRoot/PID/stat.
func ReadStat(procRoot string, pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, ErrGone
	}
	return ParseStat(pid, b)
}

// ParseStat parses the content of /proc/PID/stat. The command name may hold
// spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(pid int, b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return Stat{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := bytes.Fields(b[i+2:])
	// After the name: state(0) ppid(1) ... starttime(19).
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	start, err2 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Stat{}, fmt.Errorf("pid %d: malformed stat: %w", pid, err)
	}
	return Stat{PID: pid, PPID: ppid, State: f[0][0], Start: start}, nil
}

// Descends reports whether pid is ancestor or one of its descendants, by
// following parents in procRoot (bounded; a process gone on the way is
// not).
func Descends(procRoot string, pid, ancestor int) bool {
	for range 4096 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		st, err := ReadStat(procRoot, pid)
		if err != nil {
			return false
		}
		pid = st.PPID
	}
	return false
}

// Descendants returns root and every process below it, root first, from
// one scan of procRoot.
func Descendants(procRoot string, root int) ([]int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", procRoot, err)
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(procRoot, pid)
		if err != nil {
			continue // exited during the scan
		}
		children[st.PPID] = append(children[st.PPID], pid)
	}
	out := []int{root}
	for i := 0; i < len(out) && len(out) < 65536; i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// Tree acts on a whole process tree. Protected pids (1, the sensor, its
// parent) are never signalled, even when they sit below the root.
type Tree struct {
	ProcRoot  string
	Protected []int
	signal    func(pid int, action string) error
}

// NewTree returns a Tree that signals real processes.
func NewTree(procRoot string, protected ...int) *Tree {
	return &Tree{ProcRoot: procRoot, Protected: append([]int{1}, protected...), signal: signal}
}

func (t *Tree) protected(pid int) bool {
	for _, p := range t.Protected {
		if p == pid {
			return true
		}
	}
	return false
}

// Stop sends SIGSTOP to root and every descendant. The first pass walks
// down from root through /proc/PID/task/TID/children, stopping each process
// before reading its children: a family's workers are frozen within a
// fraction of a millisecond, before the full /proc scan, whose cost grows
// with every process on the host (workers already forked keep renaming
// files while it runs). Rescanning until no new process appears catches a
// fork that was in flight; it is bounded to a few passes. It returns every
// pid it stopped (root first) — the set Kill then acts on.
func (t *Tree) Stop(root int) ([]int, error) {
	if t.protected(root) {
		return nil, ErrProtected
	}
	stopped := map[int]bool{}
	var order []int
	if err := t.stopDown(root, stopped, &order); err != nil {
		return order, err
	}
	for pass := 0; pass < 5; pass++ {
		pids, err := Descendants(t.ProcRoot, root)
		if err != nil {
			return order, err
		}
		fresh := 0
		for _, pid := range pids {
			if stopped[pid] || t.protected(pid) {
				continue
			}
			if err := t.signal(pid, event.ActionSuspend); err != nil && !errors.Is(err, ErrGone) {
				return order, err
			}
			stopped[pid] = true
			order = append(order, pid)
			fresh++
		}
		if fresh == 0 {
			break
		}
	}
	if len(order) == 0 {
		return nil, ErrGone
	}
	return order, nil
}

// stopDown stops root and its descendants top-down, reading each one's
// children after stopping it (a stopped process cannot fork). A kernel
// without the children files leaves the rest to the full scans.
func (t *Tree) stopDown(root int, stopped map[int]bool, order *[]int) error {
	queue := []int{root}
	for len(queue) > 0 && len(*order) < 65536 {
		pid := queue[0]
		queue = queue[1:]
		if stopped[pid] || t.protected(pid) {
			continue
		}
		if err := t.signal(pid, event.ActionSuspend); errors.Is(err, ErrGone) {
			continue
		} else if err != nil {
			return err
		}
		stopped[pid] = true
		*order = append(*order, pid)
		queue = append(queue, Children(t.ProcRoot, pid)...)
	}
	return nil
}

// Children returns the children of pid's threads from
// procRoot/PID/task/TID/children (nil when gone or not provided by the
// kernel: CONFIG_PROC_CHILDREN).
func Children(procRoot string, pid int) []int {
	dir := filepath.Join(procRoot, strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "children"))
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if c, err := strconv.Atoi(string(f)); err == nil && c > 0 {
				out = append(out, c)
			}
		}
	}
	return out
}

// Kill sends SIGKILL to every pid (a stopped process dies at once).
func (t *Tree) Kill(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if t.protected(pid) {
			continue
		}
		if err := t.signal(pid, event.ActionKill); err != nil && !errors.Is(err, ErrGone) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
