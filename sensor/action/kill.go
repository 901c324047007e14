package action

import (
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/sensor/procclock"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrGone: the target process exited (or never was).
var ErrGone = errors.New("process not running")

// killProcess runs kill-process: one pid (optionally pinned by its start
// time), or every process matching a name, an executable digest or an
// executable path. Each target is killed with its descendants.
func (e *Executor) killProcess(p params) Result {
	if !supportsProcesses {
		return unsupported(ActKillProcess)
	}
	if p.pid != 0 {
		return e.killPID(p.pid, p.start)
	}
	var (
		match func(pr proc) bool
		what  string
	)
	switch {
	case p.name != "":
		what = "name " + quote(p.name)
		match = func(pr proc) bool {
			return pr.Comm == p.name || (pr.Exe != "" && filepath.Base(pr.Exe) == p.name)
		}
	case p.sha256 != "":
		what = "sha256 " + p.sha256
		match = func(pr proc) bool {
			sum, err := e.exeSHA256(pr.PID)
			return err == nil && sum == p.sha256
		}
	case p.path != "":
		target, err := e.resolveExe(p.path)
		if err != nil {
			return refused("kill-process: %v", err)
		}
		what = "path " + target
		match = func(pr proc) bool { return pr.Exe == target }
	}
	ps, err := e.procs()
	if err != nil {
		return failed("kill-process: list processes: %v", err)
	}
	var targets, skipped []int
	for _, pr := range ps {
		if pr.Kernel || pr.Dead || pr.Exe == "" && p.name == "" {
			continue
		}
		if !match(pr) {
			continue
		}
		if e.isProtected(pr.PID) {
			skipped = append(skipped, pr.PID)
			continue
		}
		targets = append(targets, pr.PID)
	}
	if len(targets) == 0 && len(skipped) > 0 {
		return refused("kill-process: every process matching %s is protected (pids %s)", what, joinInts(skipped))
	}
	if len(targets) == 0 {
		return result(StatusNoop, "kill-process: no running process matches %s", what)
	}
	killed, errs := e.killAll(targets)
	res := Result{Status: StatusOK, Affected: pidStrings(killed)}
	res.Detail = fmt.Sprintf("kill-process: killed %d process(es) matching %s with their descendants", len(killed), what)
	if len(skipped) > 0 {
		res.Detail += fmt.Sprintf("; protected and left alone: %s", joinInts(skipped))
	}
	if err := errors.Join(errs...); err != nil {
		res.Status = StatusFailed
		res.Detail += "; errors: " + err.Error()
	} else if len(killed) == 0 {
		res.Status = StatusNoop
		res.Detail = fmt.Sprintf("kill-process: every process matching %s exited before it was signalled", what)
	}
	return res
}

// killPID kills one pid with its descendants, refusing protected pids and
// kernel threads; with start (unix ms) it leaves a reused pid alone.
func (e *Executor) killPID(pid int, start int64) Result {
	if e.isProtected(pid) {
		return refused("kill-process: pid %d: %v", pid, ErrProtected)
	}
	pr, err := e.readProc(pid)
	if errors.Is(err, ErrGone) {
		return result(StatusNoop, "kill-process: pid %d is not running", pid)
	}
	if err != nil {
		return failed("kill-process: pid %d: %v", pid, err)
	}
	if pr.Kernel {
		return refused("kill-process: pid %d is a kernel thread", pid)
	}
	if pr.Dead {
		return result(StatusNoop, "kill-process: pid %d has exited already (a zombie waiting for its parent)", pid)
	}
	if start != 0 {
		got, err := e.startMilli(pr)
		if err != nil {
			return failed("kill-process: pid %d: start time: %v", pid, err)
		}
		if !procclock.SameStart(time.UnixMilli(got), time.UnixMilli(start)) {
			return result(StatusNoop, "kill-process: pid %d now belongs to another process (started at %d, not %d): not touched", pid, got, start)
		}
	}
	killed, errs := e.killAll([]int{pid})
	if err := errors.Join(errs...); err != nil {
		return Result{Status: StatusFailed, Detail: fmt.Sprintf("kill-process: pid %d: %v", pid, err), Affected: pidStrings(killed)}
	}
	if len(killed) == 0 {
		return result(StatusNoop, "kill-process: pid %d exited before it was signalled", pid)
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("kill-process: killed pid %d (%s) and %d descendant(s)", pid, quote(pr.Comm), len(killed)-1),
		Affected: pidStrings(killed)}
}

// killAll kills each target's tree; a tree already gone (a target below an
// earlier one) is not an error.
func (e *Executor) killAll(targets []int) ([]int, []error) {
	var killed []int
	var errs []error
	for _, pid := range targets {
		if slices.Contains(killed, pid) {
			continue
		}
		pids, err := e.killTree(pid)
		for _, k := range pids {
			if !slices.Contains(killed, k) {
				killed = append(killed, k)
			}
		}
		if err != nil && !errors.Is(err, ErrGone) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	return killed, errs
}

// resolveExe resolves the path of an executable for kill-process by path.
// An executable unlinked after it started still names its processes, so a
// missing file resolves through its directory.
func (e *Executor) resolveExe(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		dir, derr := filepath.EvalSymlinks(filepath.Dir(p))
		if derr != nil {
			return "", fmt.Errorf("%s: %w", p, derr)
		}
		r, err = filepath.Join(dir, filepath.Base(p)), nil
	}
	if err != nil {
		return "", err
	}
	if err := e.underRoot(r); err != nil {
		return "", err
	}
	return r, nil
}

func pidStrings(pids []int) []string {
	out := make([]string, len(pids))
	for i, p := range pids {
		out[i] = strconv.Itoa(p)
	}
	return out
}

func joinInts(v []int) string { return strings.Join(pidStrings(v), ",") }
