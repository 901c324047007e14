package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// BackendKernel is the backend name when process events come from a kernel
// feed (eBPF tracepoints, sensor/kernel): every exec carries the executable
// and the full argv read at the syscall, even for a process that is gone a
// microsecond later.
const BackendKernel = "ebpf"

// KernelKind says what a KernelEvent reports.
type KernelKind uint8

// Kinds of KernelEvent.
const (
	KernelExec KernelKind = iota + 1
	KernelFork
	KernelExit
)

// KernelEvent is one process event read in the kernel.
type KernelEvent struct {
	Kind KernelKind
	// PID is the process (thread-group id): the one that exec'd or exited,
	// or the parent of a fork.
	PID int
	// Child is the task a fork created: a process, or a thread of PID.
	Child int
	// UID is the caller's uid at the event.
	UID int
	// TimeNS is CLOCK_MONOTONIC nanoseconds.
	TimeNS uint64
	// Executable and Args describe an exec: the file the kernel ran and the
	// argv the caller passed (cut only at the feed's documented limits).
	Executable string
	Args       []string
	// ExitCode is an exit's code, shell-style (128+signal when a signal
	// ended it), or proctree.ExitCodeUnknown.
	ExitCode int
}

// KernelFeed delivers process events read in the kernel. Run calls fn from
// its own goroutine, in the kernel's order, never concurrently, until ctx
// is done; it returns nil then, or an error if the feed breaks. The feed
// is already attached when it is handed to SetKernelFeed: events of
// processes started after that are not lost (until its buffer overflows).
type KernelFeed interface {
	Run(ctx context.Context, fn func(KernelEvent)) error
}

// SetKernelFeed makes the kernel feed the source's first choice with
// backend auto; call it before Run. The feed's owner chose it and logged
// why; without one, auto starts with the proc connector.
func (s *Source) SetKernelFeed(f KernelFeed) { s.kernel = f }

// runKernel loads the running processes, then applies the feed's events.
func (s *Source) runKernel(ctx context.Context, emit func(event.Event)) error {
	k, err := s.newTracker(kernelClock)
	if err != nil {
		return err
	}
	if err := k.snapshot(); err != nil {
		return err
	}
	s.setBackend(BackendKernel)
	err = s.kernel.Run(ctx, func(ev KernelEvent) { k.kernel(ev, emit) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("process: kernel feed: %w", err)
	}
	return nil
}

// kernel applies one kernel event to the table and emits its ECS event.
func (k *tracker) kernel(ev KernelEvent, emit func(event.Event)) {
	at := k.wall(ev.TimeNS)
	switch ev.Kind {
	case KernelFork:
		// The fork tracepoint fires for threads too; a thread is listed
		// under its process's task directory.
		if k.isThread(ev.PID, ev.Child) {
			return
		}
		k.s.table.Fork(ev.PID, ev.Child, at)
	case KernelExec:
		k.kernelExec(ev, at, emit)
	case KernelExit:
		k.exit(ev.PID, at, ev.ExitCode, emit)
	}
}

func (k *tracker) isThread(pid, child int) bool {
	_, err := os.Lstat(filepath.Join(k.fs.root, strconv.Itoa(pid), "task", strconv.Itoa(child)))
	return err == nil
}

// kernelExec records the new image from what the kernel said, completed
// from procfs where the process is still there (the absolute executable
// and working directory); the kernel's argv is never replaced.
func (k *tracker) kernelExec(ev KernelEvent, at time.Time, emit func(event.Event)) {
	dir := filepath.Join(k.fs.root, strconv.Itoa(ev.PID))
	exe := ev.Executable
	if l, err := os.Readlink(filepath.Join(dir, "exe")); err == nil && l != "" {
		exe = l
	} else if exe != "" && !filepath.IsAbs(exe) {
		if cwd, err := os.Readlink(filepath.Join(dir, "cwd")); err == nil {
			exe = filepath.Join(cwd, exe)
		}
	}
	p := proctree.Proc{PID: ev.PID, UID: ev.UID, Executable: exe, Args: ev.Args, CommandLine: strings.Join(ev.Args, " ")}
	p.Cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	if k.fs.user != nil {
		p.User = k.fs.user(ev.UID)
	}
	switch {
	case exe != "" || len(ev.Args) > 0:
		p.Name = nameFromImage(exe, ev.Args)
	default:
		k.s.enrichFailures.Add(1)
		p.Name = UnknownName
	}
	if prev, ok := k.s.table.Get(ev.PID); !ok || prev.Exited {
		// Exec without a fork seen (the process predates the feed, or the
		// fork was lost): take the parent from procfs if it is there.
		if st, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
			if f, err := parseStat(st); err == nil {
				p.PPID = f.ppid
			}
		}
	}
	k.s.table.Upsert(p)
	if e, ok := k.s.table.Get(ev.PID); ok {
		p = e
	}
	k.s.emitProc(emit, ActionExec, p, at)
}
