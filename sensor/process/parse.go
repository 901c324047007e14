package process

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kernel ABI of the netlink process connector (linux/connector.h,
// linux/cn_proc.h, linux/netlink.h). Spelled out here rather than taken from
// x/sys/unix so the parser builds, and is fuzzed, on every OS.
const (
	cnIdxProc = 1 // CN_IDX_PROC
	cnValProc = 1 // CN_VAL_PROC

	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2 // PROC_CN_MCAST_IGNORE

	nlmsgHdrLen = 16 // sizeof(struct nlmsghdr)
	nlmsgNoop   = 1  // NLMSG_NOOP
	nlmsgError  = 2  // NLMSG_ERROR
	nlmsgDone   = 3  // NLMSG_DONE: the connector sends its data in these
	cnMsgLen    = 20 // sizeof(struct cn_msg) without data

	// struct proc_event: what u32, cpu u32, timestamp_ns u64, then the
	// event_data union at offset 16.
	procEventHdrLen = 16
)

// proc_event.what values this package handles; the others (uid, gid, sid,
// ptrace, comm, coredump, ...) are parsed as their kind and ignored.
const (
	procEventNone uint32 = 0x00000000 // the ack to a (un)subscribe
	procEventFork uint32 = 0x00000001
	procEventExec uint32 = 0x00000002
	procEventExit uint32 = 0x80000000
)

// errMalformed marks a datagram that does not follow the ABI.
var errMalformed = errors.New("malformed proc connector message")

// procEvent is one decoded proc_event. Which fields are set depends on What.
type procEvent struct {
	What        uint32
	CPU         uint32
	TimestampNS uint64 // CLOCK_MONOTONIC, nanoseconds
	Seq, Ack    uint32 // from cn_msg; an ack carries the request's ack + 1

	// Fork: the creating thread and the new task. A new process has
	// ChildPID == ChildTGID; a new thread has ChildPID != ChildTGID.
	ParentPID, ParentTGID, ChildPID, ChildTGID int

	// Exec and exit: the task and its thread group (the process id).
	PID, TGID int
	// Exit: the wait status (as for waitpid) and the signal sent to the parent.
	ExitStatus, ExitSignal uint32

	// None (ack): the errno of the (un)subscribe, 0 on success.
	AckErr uint32
}

// parseDatagram decodes every proc connector event in one netlink datagram.
// Messages for other connector ids and netlink no-ops are skipped. It never
// panics on any input; a malformed message ends parsing with errMalformed,
// returning the events decoded before it.
func parseDatagram(b []byte) ([]procEvent, error) {
	ne := binary.NativeEndian // netlink is host byte order
	var out []procEvent
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(b))
		}
		n := int(ne.Uint32(b[0:4]))
		typ := ne.Uint16(b[4:6])
		if n < nlmsgHdrLen || n > len(b) {
			return out, fmt.Errorf("%w: nlmsg_len %d with %d bytes left", errMalformed, n, len(b))
		}
		body := b[nlmsgHdrLen:n]
		switch typ {
		case nlmsgNoop:
		case nlmsgError:
			if len(body) < 4 {
				return out, fmt.Errorf("%w: short NLMSG_ERROR", errMalformed)
			}
			if errno := int32(ne.Uint32(body[0:4])); errno != 0 {
				return out, fmt.Errorf("netlink error %d", -errno)
			}
		default:
			ev, ok, err := parseCnMsg(body)
			if err != nil {
				return out, err
			}
			if ok {
				out = append(out, ev)
			}
		}
		// Messages are padded to 4 bytes (NLMSG_ALIGN); the last may not be.
		n = (n + 3) &^ 3
		if n > len(b) {
			n = len(b)
		}
		b = b[n:]
	}
	return out, nil
}

// parseCnMsg decodes a cn_msg; ok is false for other connectors.
func parseCnMsg(b []byte) (ev procEvent, ok bool, err error) {
	ne := binary.NativeEndian
	if len(b) < cnMsgLen {
		return ev, false, fmt.Errorf("%w: cn_msg of %d bytes", errMalformed, len(b))
	}
	idx, val := ne.Uint32(b[0:4]), ne.Uint32(b[4:8])
	dlen := int(ne.Uint16(b[16:18]))
	if cnMsgLen+dlen > len(b) {
		return ev, false, fmt.Errorf("%w: cn_msg len %d with %d bytes", errMalformed, dlen, len(b)-cnMsgLen)
	}
	if idx != cnIdxProc || val != cnValProc {
		return ev, false, nil
	}
	ev, err = parseProcEvent(b[cnMsgLen : cnMsgLen+dlen])
	ev.Seq, ev.Ack = ne.Uint32(b[8:12]), ne.Uint32(b[12:16])
	return ev, err == nil, err
}

// parseProcEvent decodes one struct proc_event. Kinds it does not handle
// are returned with only the header fields set.
func parseProcEvent(b []byte) (procEvent, error) {
	ne := binary.NativeEndian
	var ev procEvent
	if len(b) < procEventHdrLen {
		return ev, fmt.Errorf("%w: proc_event of %d bytes", errMalformed, len(b))
	}
	ev.What = ne.Uint32(b[0:4])
	ev.CPU = ne.Uint32(b[4:8])
	ev.TimestampNS = ne.Uint64(b[8:16])
	d := b[procEventHdrLen:]
	need := 0
	switch ev.What {
	case procEventNone:
		need = 4
	case procEventExec:
		need = 8
	case procEventFork, procEventExit:
		need = 16
	}
	if len(d) < need {
		return ev, fmt.Errorf("%w: event %#x with %d data bytes, want %d", errMalformed, ev.What, len(d), need)
	}
	i32 := func(off int) int { return int(int32(ne.Uint32(d[off : off+4]))) }
	switch ev.What {
	case procEventNone:
		ev.AckErr = ne.Uint32(d[0:4])
	case procEventFork:
		ev.ParentPID, ev.ParentTGID, ev.ChildPID, ev.ChildTGID = i32(0), i32(4), i32(8), i32(12)
	case procEventExec:
		ev.PID, ev.TGID = i32(0), i32(4)
	case procEventExit:
		// Newer kernels append parent_pid/parent_tgid; not needed here.
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.ExitStatus, ev.ExitSignal = ne.Uint32(d[8:12]), ne.Uint32(d[12:16])
	}
	return ev, nil
}

// exitCode turns a wait status into the code a shell would report: the exit
// status if the process exited, 128 plus the signal if a signal killed it.
func exitCode(status uint32) int {
	if sig := status & 0x7f; sig != 0 {
		return 128 + int(sig)
	}
	return int(status>>8) & 0xff
}

// subscribeMsg builds the datagram that (un)subscribes a socket with the
// given netlink port id: nlmsghdr, cn_msg, then the u32 op. The port id is
// also the cn_msg ack field, which the kernel's ack returns plus one (its
// seq is not echoed on recent kernels).
func subscribeMsg(portID uint32, op uint32) []byte {
	ne := binary.NativeEndian
	b := make([]byte, nlmsgHdrLen+cnMsgLen+4)
	ne.PutUint32(b[0:4], uint32(len(b)))
	ne.PutUint16(b[4:6], nlmsgDone)
	ne.PutUint32(b[12:16], portID)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:4], cnIdxProc)
	ne.PutUint32(c[4:8], cnValProc)
	ne.PutUint32(c[12:16], portID)
	ne.PutUint16(c[16:18], 4)
	ne.PutUint32(c[20:24], op)
	return b
}
