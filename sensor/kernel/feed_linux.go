package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// Record types and layouts on the rings (struct hdr and friends in
// bpf/tripwire.c; every field little-endian, offsets fixed by the C structs).
const (
	recExecArgs = 1
	recExec     = 2
	recFork     = 3
	recExit     = 4
	recTamper   = 5
	recStop     = 6

	exitUnknown = 0xffffffff // exit_rec.code without the kernel's BTF

	hdrLen      = 24
	pathLen     = 256
	argsOffset  = hdrLen + 16 + pathLen // exec_args_rec.args
	execFileOff = hdrLen + 8            // exec_rec.filename
	nameOffset  = hdrLen + 16           // tamper_rec.name
)

type hdr struct {
	typ, pid, tid, uid uint32
	ktime              uint64
}

func parseHdr(b []byte) (hdr, bool) {
	if len(b) < hdrLen {
		return hdr{}, false
	}
	le := binary.LittleEndian
	return hdr{le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint64(b[16:])}, true
}

// ProcessFeed reads the layer's process records; it implements
// process.KernelFeed. Create it with (*Layer).ProcessFeed.
type ProcessFeed struct {
	ring *ebpf.Map
	// pending holds each thread's last exec request until the exec
	// succeeds (sched_process_exec names the thread that asked).
	pending map[uint32]execArgs
	lost    atomic.Uint64
	at      atomic.Uint64 // kernel time of the last record applied
}

type execArgs struct {
	filename string
	args     []string
}

// ProcessFeed returns the feed of exec, fork and exit records.
func (l *Layer) ProcessFeed() *ProcessFeed {
	return &ProcessFeed{ring: l.objs.ProcEvents, pending: map[uint32]execArgs{}}
}

// Malformed counts records that could not be decoded.
func (f *ProcessFeed) Malformed() uint64 { return f.lost.Load() }

// Run implements process.KernelFeed.
func (f *ProcessFeed) Run(ctx context.Context, fn func(process.KernelEvent)) error {
	return readRing(ctx, f.ring, procPoll, procSettle, func(b []byte) {
		if ev, ok := f.decode(b); ok {
			fn(ev)
		}
		if h, ok := parseHdr(b); ok && h.ktime > f.at.Load() {
			f.at.Store(h.ktime)
		}
	})
}

// Applied returns the kernel time (CLOCK_MONOTONIC ns) of the newest record
// the feed has handed on: everything the kernel recorded before it is in
// the process table.
func (f *ProcessFeed) Applied() uint64 { return f.at.Load() }

// maxPending bounds exec requests waiting for their exec: failed execs
// (a PATH search tries several) leave one per thread until its next try.
const maxPending = 8192

func (f *ProcessFeed) decode(b []byte) (process.KernelEvent, bool) {
	h, ok := parseHdr(b)
	if !ok {
		f.lost.Add(1)
		return process.KernelEvent{}, false
	}
	le := binary.LittleEndian
	switch h.typ {
	case recExecArgs:
		if len(b) < argsOffset {
			f.lost.Add(1)
			return process.KernelEvent{}, false
		}
		argc, n := le.Uint32(b[hdrLen:]), int(le.Uint32(b[hdrLen+4:]))
		n = min(n, len(b)-argsOffset)
		args := splitArgs(b[argsOffset:argsOffset+n], int(argc))
		if len(f.pending) >= maxPending {
			clear(f.pending)
		}
		f.pending[h.tid] = execArgs{filename: cstr(b[hdrLen+16 : hdrLen+16+pathLen]), args: args}
		return process.KernelEvent{}, false
	case recExec:
		if len(b) < execFileOff+pathLen {
			f.lost.Add(1)
			return process.KernelEvent{}, false
		}
		old := le.Uint32(b[hdrLen:])
		ev := process.KernelEvent{Kind: process.KernelExec, PID: int(h.pid), UID: int(h.uid), TimeNS: h.ktime,
			Executable: cstr(b[execFileOff : execFileOff+pathLen])}
		if a, ok := f.pending[old]; ok {
			delete(f.pending, old)
			ev.Args = a.args
			if ev.Executable == "" {
				ev.Executable = a.filename
			}
		}
		return ev, true
	case recFork:
		if len(b) < hdrLen+4 {
			f.lost.Add(1)
			return process.KernelEvent{}, false
		}
		return process.KernelEvent{Kind: process.KernelFork, PID: int(h.pid), Child: int(le.Uint32(b[hdrLen:])), UID: int(h.uid), TimeNS: h.ktime}, true
	case recExit:
		delete(f.pending, h.tid)
		code := proctree.ExitCodeUnknown
		if len(b) >= hdrLen+4 && le.Uint32(b[hdrLen:]) != exitUnknown {
			code = ShellExitCode(le.Uint32(b[hdrLen:]))
		}
		return process.KernelEvent{Kind: process.KernelExit, PID: int(h.pid), TimeNS: h.ktime, ExitCode: code}, true
	}
	f.lost.Add(1)
	return process.KernelEvent{}, false
}

// splitArgs splits NUL-terminated strings; at most argc of them.
func splitArgs(b []byte, argc int) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" && argc == 0 {
		return nil
	}
	out := strings.Split(s, "\x00")
	if len(out) > argc && argc > 0 {
		out = out[:argc]
	}
	return out
}

// procPoll is how soon after a record the process feed looks again for
// records the kernel did not wake it for: the kernel wakes the reader at
// most once every 10 ms (WAKE_NS in bpf/tripwire.c), so the records that
// follow a wake-up within that time wait for this poll. A record reserved
// after a poll that found nothing is at least 10 ms after the last wake-up,
// so the kernel wakes the reader for it; one more poll after procSettle is
// a margin, and then the reader sleeps until woken: an idle sensor has no
// timer on the ring.
const (
	procPoll   = 10 * time.Millisecond
	procSettle = 100 * time.Millisecond
)

// readRing calls fn with every record of ring until ctx is done. With a
// non-zero poll, it looks for records without a wake-up poll after each
// record, then settle after a poll that found nothing, then sleeps until
// woken (see procPoll).
func readRing(ctx context.Context, ring *ebpf.Map, poll, settle time.Duration, fn func([]byte)) error {
	r, err := ringbuf.NewReader(ring)
	if err != nil {
		return fmt.Errorf("kernel: ring reader: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	defer r.Close()
	var rec ringbuf.Record
	// next is the wait before the reader gives up on records without a
	// wake-up: poll after a record, settle after an empty poll, none
	// (sleep until woken) after an empty settle.
	next := poll
	for {
		if next > 0 {
			r.SetDeadline(time.Now().Add(next))
		} else {
			r.SetDeadline(time.Time{})
		}
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if next == poll {
					next = settle
				} else {
					next = 0
				}
				continue
			}
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kernel: reading ring: %w", err)
		}
		next = poll
		fn(rec.RawSample)
	}
}

// TamperFeed reads the layer's tripwire records.
type TamperFeed struct{ ring *ebpf.Map }

// TamperFeed returns the feed of tripwire records. Records written while
// no sensor ran are still in the pinned ring and come first.
func (l *Layer) TamperFeed() *TamperFeed { return &TamperFeed{ring: l.objs.TamperEvents} }

// Run calls fn with every tripwire record until ctx is done.
func (f *TamperFeed) Run(ctx context.Context, fn func(Tamper)) error {
	return readRing(ctx, f.ring, 0, 0, func(b []byte) {
		if t, ok := decodeTamper(b); ok {
			fn(t)
		}
	})
}

func decodeTamper(b []byte) (Tamper, bool) {
	h, ok := parseHdr(b)
	if !ok || (h.typ != recTamper && h.typ != recStop) || len(b) < nameOffset+KeyLen {
		return Tamper{}, false
	}
	le := binary.LittleEndian
	return Tamper{
		Reason: Reason(le.Uint32(b[hdrLen:])), Target: int(le.Uint32(b[hdrLen+4:])), Signal: int(le.Uint32(b[hdrLen+8:])),
		Family: int(le.Uint32(b[hdrLen+12:])), PID: int(h.pid), TID: int(h.tid), UID: int(h.uid), TimeNS: h.ktime,
		Name: cstr(b[nameOffset : nameOffset+KeyLen]),
	}, true
}

// RunTamper runs the tamper feed; it lets a Layer serve as Tripwires.
func (l *Layer) RunTamper(ctx context.Context, fn func(Tamper)) error {
	return l.TamperFeed().Run(ctx, fn)
}
