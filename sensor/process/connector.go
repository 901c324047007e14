package process

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/proctree"

	"github.com/tillwatch/tillwatch/sensor/procclock"
)

// tracker applies decoded proc connector events to the table and emits the
// resulting ECS events. It holds the OS-independent half of the netlink
// backend, so tests drive it with hand-built events and a fake procfs.
type tracker struct {
	s    *Source
	fs   procFS
	wall func(monoNS uint64) time.Time // event time to wall clock
	now  func() time.Time
}

func (s *Source) newTracker(wall func(uint64) time.Time) (*tracker, error) {
	boot, err := procclock.BootTime(s.cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("reading boot time under %s: %w", s.cfg.ProcRoot, err)
	}
	return &tracker{
		s:    s,
		fs:   procFS{root: s.cfg.ProcRoot, boot: boot, user: s.users.name},
		wall: wall,
		now:  time.Now,
	}, nil
}

// snapshot loads every running process into the table without events, so
// ancestry through processes started before the sensor is known.
func (k *tracker) snapshot() error {
	procs, err := k.fs.readAll()
	if err != nil {
		return err
	}
	for _, p := range procs {
		k.s.table.Upsert(p)
	}
	k.s.log.Debug("loaded running processes", slog.Int(logkey.Count, len(procs)))
	return nil
}

// handle applies one event. Threads are not processes: their forks and
// exits are skipped.
func (k *tracker) handle(ev procEvent, emit func(event.Event)) {
	switch ev.What {
	case procEventFork:
		if ev.ChildPID != ev.ChildTGID {
			return
		}
		// The parent is the forking thread's process (a Go program forks
		// from any of its threads).
		k.s.table.Fork(ev.ParentTGID, ev.ChildTGID, k.wall(ev.TimestampNS))
	case procEventExec:
		k.exec(ev.TGID, k.wall(ev.TimestampNS), emit)
	case procEventExit:
		if ev.PID != ev.TGID {
			return
		}
		k.exit(ev.TGID, k.wall(ev.TimestampNS), exitCode(ev.ExitStatus), emit)
	}
}

// exec records the new image of pid from procfs and emits its start event.
// A process gone before procfs could be read still gets an event, with what
// the fork record knows (pid, parent, start) and UnknownName; one that is
// already a zombie gets its comm as name and no executable.
func (k *tracker) exec(pid int, at time.Time, emit func(event.Event)) {
	p, incomplete, err := k.fs.readState(pid)
	switch {
	case err != nil:
		k.s.enrichFailures.Add(1)
		k.s.log.Debug("process gone before it could be read", slog.Int(logkey.PID, pid), slog.Any(logkey.Error, err))
		p = proctree.Proc{PID: pid, Name: UnknownName, UID: proctree.UnknownUID}
	case incomplete:
		// Exited already: only stat's comm (15 bytes), parent and start
		// are left. Still worth the event; counted so it shows.
		k.s.enrichFailures.Add(1)
	}
	k.s.table.Upsert(p)
	if e, ok := k.s.table.Get(pid); ok {
		p = e
	}
	k.s.emitProc(emit, ActionExec, p, at)
}

// exit marks pid ended and emits its end event. Exits of processes the table
// never knew (they ended before the snapshot) carry nothing worth sending.
func (k *tracker) exit(pid int, at time.Time, code int, emit func(event.Event)) {
	k.s.table.Exit(pid, at, code)
	p, ok := k.s.table.Get(pid)
	if !ok || !p.Exited {
		return
	}
	k.s.emitProc(emit, ActionExit, p, at)
}

// resync reconciles the table with procfs after events were lost: processes
// procfs shows that the table lacks get start events, running table entries
// procfs no longer shows get end events (exit code unknown), both tagged
// TagResync and stamped with the rescan time.
func (k *tracker) resync(emit func(event.Event)) (started, ended int, err error) {
	procs, err := k.fs.readAll()
	if err != nil {
		return 0, 0, err
	}
	now := k.now()
	running := make(map[int]proctree.Proc)
	for _, p := range k.s.table.Running() {
		running[p.PID] = p
	}
	for _, p := range procs {
		old, known := running[p.PID]
		delete(running, p.PID)
		if known && sameStart(old.Start, p.Start) {
			k.s.table.Upsert(p) // details may have changed by a lost exec
			continue
		}
		if known { // the pid was reused while events were lost
			k.endLost(old.PID, now, emit)
			ended++
		}
		k.s.table.Upsert(p)
		if e, ok := k.s.table.Get(p.PID); ok {
			p = e
		}
		k.s.emitProc(emit, ActionExec, p, now, TagResync)
		started++
	}
	for pid := range running {
		k.endLost(pid, now, emit)
		ended++
	}
	return started, ended, nil
}

func (k *tracker) endLost(pid int, now time.Time, emit func(event.Event)) {
	k.s.table.Exit(pid, now, proctree.ExitCodeUnknown)
	if p, ok := k.s.table.Get(pid); ok {
		k.s.emitProc(emit, ActionExit, p, now, TagResync)
	}
}

// sameStart reports whether two start times can belong to one process.
func sameStart(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return true
	}
	d := a.Sub(b).Abs()
	return d <= proctree.StartSlack
}
