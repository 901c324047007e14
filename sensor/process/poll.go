package process

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/shirou/gopsutil/v3/common"
	gproc "github.com/shirou/gopsutil/v3/process"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// runPoll runs the polling backend: every PollInterval it lists processes
// and reports new pids as starts and vanished ones as ends. It sees neither
// processes shorter than the interval, nor exit codes, nor a pid reused
// within one interval; that is the price of working everywhere.
func (s *Source) runPoll(ctx context.Context, emit func(event.Event)) error {
	// gopsutil reads procfs on Linux; point it at the injected root.
	gctx := context.WithValue(ctx, common.EnvKey, common.EnvMap{common.HostProcEnvKey: s.cfg.ProcRoot})
	pids, err := gproc.PidsWithContext(gctx)
	if err != nil {
		return fmt.Errorf("process: poll backend: listing processes: %w", err)
	}
	known := make(map[int32]bool, len(pids))
	procs := make([]proctree.Proc, 0, len(pids))
	for _, pid := range pids {
		if p, err := s.pollInfo(gctx, pid); err == nil {
			procs = append(procs, p)
		}
		known[pid] = true
	}
	// Parents before children, so the table records each parent's start.
	slices.SortStableFunc(procs, func(a, b proctree.Proc) int { return a.Start.Compare(b.Start) })
	for _, p := range procs {
		s.table.Upsert(p)
	}
	s.setBackend(BackendPoll)

	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		pids, err := gproc.PidsWithContext(gctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("process: poll backend: listing processes: %w", err)
		}
		s.pollDiff(gctx, known, pids, time.Now(), emit)
	}
}

// pollDiff reports the difference between the known pids and the current
// list, and updates known.
func (s *Source) pollDiff(ctx context.Context, known map[int32]bool, pids []int32, now time.Time, emit func(event.Event)) {
	seen := make(map[int32]bool, len(pids))
	for _, pid := range pids {
		seen[pid] = true
		if known[pid] {
			continue
		}
		known[pid] = true
		p, err := s.pollInfo(ctx, pid)
		if err != nil {
			// Listed a moment ago and gone now: there is nothing to say
			// about it beyond its pid.
			s.enrichFailures.Add(1)
			continue
		}
		s.table.Upsert(p)
		if e, ok := s.table.Get(int(pid)); ok {
			p = e
		}
		at := now
		if !p.Start.IsZero() && p.Start.Before(now) {
			at = p.Start // the process started before we noticed
		}
		s.emitProc(emit, ActionExec, p, at)
	}
	for pid := range known {
		if seen[pid] {
			continue
		}
		delete(known, pid)
		s.table.Exit(int(pid), now, proctree.ExitCodeUnknown)
		if p, ok := s.table.Get(int(pid)); ok && p.Exited {
			s.emitProc(emit, ActionExit, p, now)
		}
	}
}

// pollInfo reads a process's details through gopsutil. The error is non-nil
// only if the process is gone; each detail is best effort.
func (s *Source) pollInfo(ctx context.Context, pid int32) (proctree.Proc, error) {
	gp, err := gproc.NewProcessWithContext(ctx, pid)
	if err != nil {
		return proctree.Proc{}, err
	}
	p := proctree.Proc{PID: int(pid), UID: proctree.UnknownUID}
	if ppid, err := gp.PpidWithContext(ctx); err == nil {
		p.PPID = int(ppid)
	}
	if ms, err := gp.CreateTimeWithContext(ctx); err == nil && ms > 0 {
		p.Start = time.UnixMilli(ms)
	}
	p.Name, _ = gp.NameWithContext(ctx)
	p.Executable, _ = gp.ExeWithContext(ctx)
	if args, err := gp.CmdlineSliceWithContext(ctx); err == nil && len(args) > 0 {
		p.Args = args
		p.CommandLine, _ = gp.CmdlineWithContext(ctx)
	}
	p.Cwd, _ = gp.CwdWithContext(ctx)
	if uids, err := gp.UidsWithContext(ctx); err == nil && len(uids) > 1 && runtime.GOOS != "windows" {
		p.UID = int(uids[1]) // effective, as on the netlink path
		p.User = s.users.name(p.UID)
	} else if name, err := gp.UsernameWithContext(ctx); err == nil {
		p.User = name
	}
	if p.Name == "" {
		p.Name = UnknownName
	}
	return p, nil
}
