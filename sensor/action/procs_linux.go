package action

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/sensor/procclock"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/response"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

const supportsProcesses = true

// pfKthread is PF_KTHREAD in /proc/PID/stat flags: a kernel thread, which
// has no executable and must never be signalled.
const pfKthread = 0x00200000

// proc is what the actions need of one process.
type proc struct {
	PID, PPID int
	Comm      string // kernel comm (at most 15 bytes)
	Exe       string // resolved executable; "" when unreadable
	Deleted   bool   // the executable was unlinked after exec
	Start     uint64 // start time in clock ticks since boot
	Kernel    bool
	// Dead: a zombie (or dying) process. It has exited already; only its
	// parent's wait is missing, and no signal changes anything.
	Dead bool
}

// readProc reads ProcRoot/PID; a process that is gone is ErrGone.
func (e *Executor) readProc(pid int) (proc, error) {
	dir := filepath.Join(e.o.ProcRoot, strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return proc{}, ErrGone
	}
	st, err := response.ParseStat(pid, b)
	if err != nil {
		return proc{}, err
	}
	p := proc{PID: pid, PPID: st.PPID, Start: st.Start, Dead: st.State == 'Z' || st.State == 'X'}
	if i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')'); i >= 0 && j > i {
		p.Comm = string(b[i+1 : j])
		// After the name: state(0) ppid(1) pgrp(2) session(3) tty(4) tpgid(5) flags(6).
		if f := bytes.Fields(b[j+1:]); len(f) > 6 {
			flags, _ := strconv.ParseUint(string(f[6]), 10, 64)
			p.Kernel = flags&pfKthread != 0
		}
	}
	if !p.Kernel {
		if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
			p.Exe, p.Deleted = strings.CutSuffix(exe, " (deleted)")
		}
	}
	return p, nil
}

// procs lists every process of ProcRoot; processes that exit during the
// scan are skipped.
func (e *Executor) procs() ([]proc, error) {
	ents, err := os.ReadDir(e.o.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", e.o.ProcRoot, err)
	}
	out := make([]proc, 0, len(ents))
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if p, err := e.readProc(pid); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// startMilli is the process's start in unix milliseconds, computed as the
// process source stamps it on events (sensor/procclock).
func (e *Executor) startMilli(p proc) (int64, error) {
	boot, err := procclock.BootTime(e.o.ProcRoot)
	if err != nil {
		return 0, err
	}
	return procclock.Start(boot, p.Start).UnixMilli(), nil
}

// ancestors returns the sensor's parent chain up to (not including) pid 1.
func (e *Executor) ancestors() []int {
	var out []int
	proctree.Up(e.self, func(pid int) (int, bool) {
		p, err := e.readProc(pid)
		if err != nil || p.PPID <= 1 {
			return 0, false
		}
		out = append(out, p.PPID)
		return p.PPID, true
	})
	return out
}

// killTree stops the tree below pid, then kills it (sensor/response).
// Protected pids inside the tree are left alone. It returns the pids
// signalled; a tree that vanished first is ErrGone.
//
// A SIGSTOP takes effect when the target next returns to user space, so a
// process caught inside fork() still completes it: its child may not yet
// be visible when Tree.Stop rescans, and would survive as an orphan. Once
// every stopped process shows state T its forks are done, so the tree is
// scanned again until a round finds nobody new.
func (e *Executor) killTree(pid int) ([]int, error) {
	if e.isProtected(pid) {
		return nil, ErrProtected
	}
	t := response.NewTree(e.o.ProcRoot, e.protectedList()...)
	seen := map[int]bool{}
	var order []int
	var err error
	for round := 0; round < 5; round++ {
		var pids []int
		pids, err = t.Stop(pid)
		if errors.Is(err, response.ErrGone) {
			if round == 0 {
				return nil, ErrGone
			}
			err = nil
		}
		if errors.Is(err, response.ErrProtected) {
			return nil, ErrProtected
		}
		fresh := 0
		for _, p := range pids {
			if !seen[p] {
				seen[p] = true
				order = append(order, p)
				fresh++
			}
		}
		if err != nil || fresh == 0 {
			break
		}
		e.waitStopped(pids)
	}
	// Kill whatever was stopped even when Stop failed part way: a stopped
	// process left behind would stay frozen.
	var kerr error
	if len(order) > 0 {
		kerr = t.Kill(order)
	}
	return order, errors.Join(err, kerr)
}

// waitStopped waits, bounded, until every pid is stopped or gone.
func (e *Executor) waitStopped(pids []int) {
	deadline := time.Now().Add(250 * time.Millisecond)
	for _, p := range pids {
		for {
			st, err := response.ReadStat(e.o.ProcRoot, p)
			if err != nil || st.State == 'T' || st.State == 't' || st.State == 'Z' || st.State == 'X' || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// exeSHA256 hashes the executable of pid through ProcRoot/PID/exe (which
// opens the file the process runs, even when it was unlinked), cached per
// file version so repeated scans stay cheap.
func (e *Executor) exeSHA256(pid int) (string, error) {
	f, err := os.Open(filepath.Join(e.o.ProcRoot, strconv.Itoa(pid), "exe"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, _, err := e.hashes.Sum(f, rmm.MaxHashSize)
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	return sum, nil
}
