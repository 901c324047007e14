package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/procclock"
)

const (
	// rcvBufSize is the socket receive buffer asked for. A fork storm
	// produces tens of thousands of events a second and emit may stall
	// briefly; 4 MiB holds about 40k events.
	rcvBufSize = 4 << 20
	// ackTimeout bounds the wait for the kernel to confirm the
	// subscription. Outside the initial user and pid namespaces the kernel
	// ignores the request silently, so silence means "does not work here".
	ackTimeout = 2 * time.Second
	// resyncGap is the least time between two procfs rescans, so an
	// overflow storm cannot turn into a storm of rescans.
	resyncGap = time.Second
)

// nlConn is a netlink socket subscribed to the proc connector. Reads go
// through the Go poller, so Close from another goroutine ends a blocked read.
type nlConn struct {
	f    *os.File
	rc   syscall.RawConn
	port uint32
	buf  []byte

	closeOnce  sync.Once
	subscribed bool
}

// Probe reports whether the netlink process connector works here: it
// subscribes, waits for the kernel's acknowledgement (up to 2s) and
// unsubscribes. It needs root (CAP_NET_ADMIN) in the initial namespaces.
func Probe() error {
	c, err := openNetlink(rcvBufSize)
	if err != nil {
		return err
	}
	return c.Close()
}

// openNetlink opens, binds and subscribes a proc connector socket with a
// receive buffer of rcvbuf bytes, and waits for the kernel to acknowledge
// the subscription.
func openNetlink(rcvbuf int) (*nlConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	// SO_RCVBUFFORCE passes the rmem_max cap but needs CAP_NET_ADMIN;
	// without it, take what SO_RCVBUF allows.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	// Port id 0 lets the kernel pick a unique one, so several sockets
	// (tests, Probe beside Run) can coexist in one process.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink getsockname: %w", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink getsockname: unexpected %T", sa)
	}
	f := os.NewFile(uintptr(fd), "proc-connector")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	c := &nlConn{f: f, rc: rc, port: nsa.Pid, buf: make([]byte, 32<<10)}
	if err := c.subscribe(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// subscribe sends PROC_CN_MCAST_LISTEN and waits for its ack, recognised by
// the ack number (our port id plus one) the kernel returns: acks are
// multicast to every listener, so another socket's ack must not count as ours.
func (c *nlConn) subscribe() error {
	if err := c.send(procCnMcastListen); err != nil {
		return fmt.Errorf("subscribing to the proc connector: %w", err)
	}
	if err := c.f.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	for {
		evs, err := c.recv(false)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("no acknowledgement from the proc connector within %s (the sensor must run in the host's initial user and pid namespaces)", ackTimeout)
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, errMalformed):
			continue
		case err != nil:
			return fmt.Errorf("waiting for the proc connector: %w", err)
		}
		for _, ev := range evs {
			if ev.What != procEventNone || ev.Ack != c.port+1 {
				continue
			}
			if ev.AckErr != 0 {
				return fmt.Errorf("proc connector refused the subscription: %w", unix.Errno(ev.AckErr))
			}
			c.subscribed = true
			return c.f.SetReadDeadline(time.Time{})
		}
	}
}

func (c *nlConn) send(op uint32) error {
	msg := subscribeMsg(c.port, op)
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// errDrained is recv's report that the receive queue is empty.
var errDrained = errors.New("proc connector receive queue drained")

// recv blocks for the next datagram from the kernel and decodes it; with
// untilEmpty it returns errDrained instead of blocking on an empty queue.
// Datagrams from anyone but the kernel are dropped: an unprivileged process
// can send unicast netlink messages to our port and must not forge process
// events. A decoding error wraps errMalformed and comes with the events
// before it.
func (c *nlConn) recv(untilEmpty bool) ([]procEvent, error) {
	for {
		var (
			n       int
			from    unix.Sockaddr
			rerr    error
			drained bool
		)
		err := c.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), c.buf, 0)
			if rerr == unix.EAGAIN && untilEmpty {
				drained = true
				return true
			}
			return rerr != unix.EAGAIN
		})
		switch {
		case err != nil:
			return nil, err
		case drained:
			return nil, errDrained
		case rerr != nil:
			return nil, rerr
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		return parseDatagram(c.buf[:n])
	}
}

// Close unsubscribes (so the kernel stops producing events when no one
// listens) and closes the socket, ending any blocked recv. It is idempotent
// and safe to call concurrently with recv.
func (c *nlConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.subscribed {
			_ = c.send(procCnMcastIgnore)
		}
		err = c.f.Close()
	})
	return err
}

// runNetlink runs the netlink backend on a subscribed socket until ctx is
// done, and always closes the socket.
func (s *Source) runNetlink(ctx context.Context, c *nlConn, emit func(event.Event)) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	k, err := s.newTracker(procclock.MonotonicToWall)
	if err != nil {
		return fmt.Errorf("process: %w", err)
	}
	// The snapshot runs after subscribing, so a process starting meanwhile
	// is in the snapshot, or its events are queued, or both.
	if err := k.snapshot(); err != nil {
		return fmt.Errorf("process: loading running processes: %w", err)
	}
	s.setBackend(BackendNetlink)

	// After an overflow the kernel drops every event until a read finds the
	// queue empty, and reports only the first drop. So the rescan must come
	// after that read, or processes started in between are lost unseen:
	// lost means "ENOBUFS seen, queue not yet drained", due means "drained
	// since, rescan owed" (held back to one per resyncGap).
	var (
		lost, due  bool
		lastResync time.Time
	)
	resync := func() {
		due, lastResync = false, time.Now()
		_ = c.f.SetReadDeadline(time.Time{})
		started, ended, err := k.resync(emit)
		if err != nil {
			s.log.Error("rescanning processes after lost events failed; process ancestry may be incomplete",
				slog.String(logkey.Path, s.cfg.ProcRoot), slog.Any(logkey.Error, err))
			return
		}
		reason := fmt.Sprintf("rescanned %s after lost events: %d processes started and %d ended unseen", s.cfg.ProcRoot, started, ended)
		s.log.Info("process events resynchronised", slog.String(logkey.Reason, reason))
		s.reportHealth(event.HealthOK, reason)
	}
	for {
		evs, err := c.recv(lost)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			lost = true
			s.overflows.Add(1)
			s.log.Warn("kernel dropped process events: receive buffer full; procfs will be rescanned. If this repeats, look for a fork storm or a slow pipeline",
				slog.Uint64(logkey.Count, s.overflows.Load()))
			s.reportHealth(event.HealthDegraded, "process events lost: netlink receive buffer overflowed; rescanning "+s.cfg.ProcRoot)
		case errors.Is(err, errDrained):
			lost, due = false, true
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, errMalformed):
			s.log.Warn("skipping malformed proc connector message", slog.Any(logkey.Error, err))
		case errors.Is(err, unix.EINTR):
		default:
			return fmt.Errorf("process: reading the proc connector: %w", err)
		}
		for _, ev := range evs {
			k.handle(ev, emit)
		}
		if due && !lost {
			if wait := resyncGap - time.Since(lastResync); wait > 0 {
				_ = c.f.SetReadDeadline(time.Now().Add(wait))
			} else {
				resync()
			}
		}
	}
}
