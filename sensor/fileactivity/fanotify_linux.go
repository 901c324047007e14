package fileactivity

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// fanBackend watches with two fanotify groups.
//
// Why two groups: the kernel refuses FID reporting (needed for create,
// delete and rename, which carry no open file) on a group that receives
// permission events, and refuses permission events on a FID group. The
// content group alone keeps the ordering that matters for a synchronous
// stop: a process's close-write of file N is queued before its open of file
// N+1, so the guard has scored N before it answers N+1 (contentBatch).
//
// Marks. The content group marks each watched directory: only the watched
// trees should pay for permission events; a filesystem mark would make every
// open on the disk wait for the sensor. The name group (no permission
// events, no descriptors) holds one filesystem mark per file system of the
// watched roots where the kernel allows it: a folder created at run time
// then has its creates, deletes and renames reported from its first entry,
// with no window before a per-directory mark lands. Its events cover the
// whole file system, so they are filtered here: a directory handle not seen
// before is resolved once with open_by_handle_at and remembered inside or
// outside the watched trees. Where the kernel refuses filesystem marks
// (before 5.9 with DFID_NAME; file systems without a unique fsid or file
// handles, e.g. some FUSE and overlay mounts) it marks each directory too.
type fanBackend struct {
	s       *Source
	content int  // FAN_CLASS_CONTENT (or NOTIF when permission events are refused)
	names   int  // FAN_REPORT_DFID_NAME group; -1 if the kernel has none
	perm    bool // content group receives FAN_OPEN_PERM
	rename  bool // FAN_RENAME (5.17+) rather than MOVED_FROM/MOVED_TO
	fsMark  bool // the name group holds filesystem marks (else per-directory)
	// mounts maps a watched file system's fsid to an O_PATH descriptor of a
	// watched root on it: the mount open_by_handle_at resolves handles in.
	// Written before the loops start, read-only after.
	mounts map[[8]byte]int
	// unhandled counts the content group's events read and not yet
	// handled: a request read while it is above zero is Behind.
	unhandled atomic.Int64
	// nameMu is held while name events are read and handled: by the name
	// loop, or by the content handler catching up (catchUpNames).
	nameMu  sync.Mutex
	nameBuf []byte // catchUpNames's

	mu      sync.Mutex
	dirs    map[string]string // FID handle key -> directory path (watched)
	outside map[string]bool   // FID handle keys of directories outside the watched trees
}

// maxOutside bounds the cache of directories outside the watched trees that
// a filesystem mark reports; when full it starts over (each costs one
// open_by_handle_at to learn again).
const maxOutside = 16384

const markFlags = unix.FAN_MARK_ADD | unix.FAN_MARK_ONLYDIR | unix.FAN_MARK_DONT_FOLLOW

func newFanotify(s *Source) (backend, error) {
	b := &fanBackend{s: s, names: -1, nameBuf: make([]byte, 64<<10), dirs: map[string]string{}, outside: map[string]bool{}, mounts: map[[8]byte]int{}}
	fd, err := -1, error(unix.EINVAL)
	if !s.cfg.NoOpenPerm {
		fd, err = unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_MARKS,
			unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	}
	switch {
	case err == nil:
		b.perm = true
	case s.cfg.NoOpenPerm:
		fd, err = unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_MARKS, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("fanotify_init: %w (needs CAP_SYS_ADMIN)", err)
		}
	default:
		fd, err = unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("fanotify_init: %w (needs CAP_SYS_ADMIN)", err)
		}
		s.health(component, event.HealthDegraded, "fanotify permission events refused by the kernel (CONFIG_FANOTIFY_ACCESS_PERMISSIONS?): canaries and encryptors are stopped after the fact, not before the next open")
	}
	b.content = fd
	nfd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_MARKS|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		s.health(component, event.HealthDegraded, fmt.Sprintf("fanotify FID reporting unavailable (%v; kernel >= 5.9 needed): no create, delete or rename events", err))
	} else {
		b.names = nfd
		b.rename = true
		if !s.dirMarksOnly {
			if err := b.markFilesystems(); err != nil {
				s.log.Info("fanotify: filesystem marks refused; marking every watched directory for name events", logkey.Error, err)
			}
		}
	}
	for _, root := range s.cfg.Paths {
		if err := b.markDir(root); err != nil {
			b.close()
			return nil, fmt.Errorf("mark %s: %w", root, err)
		}
		b.addTree(root, false, nil)
	}
	s.nameMarks = nameMarksDirectory
	if b.fsMark {
		s.nameMarks = nameMarksFilesystem
	}
	why := "every open in the watched trees waits for the sensor's answer"
	if !b.perm {
		why = "none: " + s.cfg.NoOpenPermWhy
		if !s.cfg.NoOpenPerm {
			why = "none: refused by the kernel"
		}
	}
	s.log.Info("file activity on fanotify", "permission_events", b.perm, "permission_events_why", why, "name_events", b.names >= 0, "name_marks", s.nameMarks)
	return b, nil
}

// How the name group marks.
const (
	nameMarksFilesystem = "filesystem"
	nameMarksDirectory  = "directory"
)

func (b *fanBackend) close() {
	_ = unix.Close(b.content)
	if b.names >= 0 {
		_ = unix.Close(b.names)
	}
	b.closeMounts()
}

func (b *fanBackend) run(ctx context.Context, emit func(event.Event)) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	loopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if b.names >= 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.loop(loopCtx, b.names, &b.nameMu, func(evs []rawEvent) {
				for _, ev := range evs {
					b.nameEvent(ev, emit)
				}
			}); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	// The content group is read by this goroutine and handled by another
	// (contentBatch): requests the hook's Prejudger allows are answered
	// as they are read, while the handler may still be scoring earlier
	// events. A few batches may wait; then reading waits too.
	work := make(chan []contentReq, 4)
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		for reqs := range work {
			for i := range reqs {
				r := &reqs[i]
				if !r.answered && r.a != nil && r.a.Perm {
					b.catchUpNames(emit)
				}
				b.contentEvent(r, emit)
				b.unhandled.Add(-1)
			}
		}
	}()
	if err := b.loop(loopCtx, b.content, nil, func(evs []rawEvent) {
		reqs := b.contentBatch(evs)
		b.unhandled.Add(int64(len(reqs)))
		work <- reqs
	}); err != nil {
		errs <- err
		cancel()
	}
	close(work)
	<-handled
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// loop reads fd until ctx is done. It sleeps in poll until fd has events
// or ctx is cancelled (an eventfd written on cancel), with no timeout: an
// idle sensor makes no periodic wake-up here. lock, when not nil, is held
// from each read until its events are handled.
func (b *fanBackend) loop(ctx context.Context, fd int, lock *sync.Mutex, handle func([]rawEvent)) error {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("fanotify loop: eventfd: %w", err)
	}
	// The cancel callback may run while loop returns: the lock keeps it
	// from writing to a closed (or reused) descriptor.
	var mu sync.Mutex
	closed := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			_, _ = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	})
	defer func() {
		stop()
		mu.Lock()
		closed = true
		_ = unix.Close(efd)
		mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if _, err := unix.Poll(pfd, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll fanotify: %w", err)
		}
		if pfd[1].Revents != 0 {
			return nil // cancelled
		}
		if pfd[0].Revents == 0 {
			continue
		}
		if err := b.readOnce(fd, buf, lock, handle); err != nil {
			return err
		}
	}
	return nil
}

// readOnce reads and handles what fd holds now (nothing: another reader
// took it).
func (b *fanBackend) readOnce(fd int, buf []byte, lock *sync.Mutex, handle func([]rawEvent)) error {
	if lock != nil {
		lock.Lock()
		defer lock.Unlock()
	}
	n, err := unix.Read(fd, buf)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read fanotify: %w", err)
	}
	evs, perr := parseEvents(buf[:n])
	handle(evs)
	return perr
}

// catchUpNames handles the name events queued so far, before the content
// handler judges an open: a process's delete or rename of file N is queued
// (in the name group) before its open of file N+1, and the guard must have
// seen it to judge that open, as it has seen N's completed write (the
// content group's order). Without it a write-new-then-delete encryptor's
// deletes were judged late, in another goroutine, while its creates went
// on.
func (b *fanBackend) catchUpNames(emit func(event.Event)) {
	if b.names < 0 {
		return
	}
	b.nameMu.Lock()
	defer b.nameMu.Unlock()
	for {
		n, err := unix.Read(b.names, b.nameBuf)
		if err != nil || n <= 0 {
			return // EAGAIN: caught up (another error: the name loop meets it too)
		}
		evs, perr := parseEvents(b.nameBuf[:n])
		for _, ev := range evs {
			b.nameEvent(ev, emit)
		}
		if perr != nil {
			b.s.log.Warn("fanotify name events: a malformed event ended a read", "err", perr)
			return
		}
	}
}

// namesPending reports name events queued, or read and not yet handled:
// an open read after them is behind them.
func (b *fanBackend) namesPending() bool {
	if b.names < 0 {
		return false
	}
	if !b.nameMu.TryLock() {
		return true // being read or handled
	}
	defer b.nameMu.Unlock()
	pfd := []unix.PollFd{{Fd: int32(b.names), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err != nil || n > 0
}

func (b *fanBackend) overflow(ev rawEvent) bool {
	if ev.Mask&unix.FAN_Q_OVERFLOW == 0 {
		return false
	}
	b.s.lost.WithLabelValues(BackendFanotify, "overflow").Inc()
	b.s.log.Warn("fanotify queue overflow: file events were lost")
	b.s.health(component, event.HealthDegraded, "fanotify queue overflow: file events were lost (see tillwatch_file_events_lost_total); the sensor cannot keep up with the file activity")
	return true
}

// contentReq is one event of the content group on its way through a batch.
type contentReq struct {
	ev       rawEvent
	a        *Activity // nil: the sensor's own, or outside the watched trees
	answered bool      // allowed already by the Prejudger
}

// contentBatch prepares one read of the content group (permission requests
// and completed writes, in the kernel's order) for the handler, and answers
// at once each request the hook's Prejudger allows.
//
// The order matters for one thing: a process's close-write of file N is
// queued before its open of file N+1, so the guard has scored N before it
// answers an open that could destroy N+1; such opens (for writing) wait for
// the handler, in order. An open that cannot destroy content (for
// reading; the Prejudger says, told whether anything is queued ahead by
// Activity.Behind) is answered here instead: scoring the events queued
// ahead of it (sampling each written file) no longer adds to its wait,
// which in a compressor's or a backup's run was most of it.
func (b *fanBackend) contentBatch(evs []rawEvent) []contentReq {
	reqs := make([]contentReq, 0, len(evs))
	for _, ev := range evs {
		if b.overflow(ev) || ev.FD < 0 {
			continue
		}
		reqs = append(reqs, contentReq{ev: ev})
	}
	// Permission requests first: each opener waits for its answer, while
	// the completed writes queued beside them can be prepared after.
	pre, ok := b.s.hook.(Prejudger)
	ok = ok && b.perm
	behind, asked := b.unhandled.Load() > 0, false
	for i := range reqs {
		r := &reqs[i]
		if r.ev.Mask&unix.FAN_OPEN_PERM == 0 {
			behind = true
			continue
		}
		b.prepare(r)
		if ok && r.a != nil {
			if !behind && !asked {
				behind, asked = b.namesPending(), true
			}
			r.a.Behind = behind
			if b.s.safePrejudge(pre, r.a) {
				b.respond(int(r.ev.FD), unix.FAN_ALLOW)
				r.answered, r.a.Answered = true, true
				continue
			}
		}
		behind = true
	}
	for i := range reqs {
		if reqs[i].ev.Mask&unix.FAN_OPEN_PERM == 0 {
			b.prepare(&reqs[i])
		}
	}
	return reqs
}

// prepare reads what an event is about through its descriptor: the path
// and size of the file.
func (b *fanBackend) prepare(r *contentReq) {
	ev := r.ev
	if int(ev.PID) == b.s.cfg.Self {
		return
	}
	fd := int(ev.FD)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !b.s.under(path) {
		return
	}
	a := &Activity{Path: path, PID: int(ev.PID), Perm: ev.Mask&unix.FAN_OPEN_PERM != 0, ReadAt: func(p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) }}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		a.Size = st.Size
	}
	if a.Perm {
		a.Op = OpOpen
	}
	r.a = a
}

// contentEvent handles a permission request or a completed write, answers
// the request unless that was done already, and closes the descriptor.
func (b *fanBackend) contentEvent(r *contentReq, emit func(event.Event)) {
	fd := int(r.ev.FD)
	defer unix.Close(fd)
	perm := r.ev.Mask&unix.FAN_OPEN_PERM != 0
	verdict := Verdict{}
	if perm && !r.answered {
		defer func() {
			resp := uint32(unix.FAN_ALLOW)
			if verdict.Deny {
				resp = unix.FAN_DENY
			}
			b.respond(fd, resp)
		}()
	}
	a := r.a
	if a == nil {
		return
	}
	if perm {
		a.Op = OpOpen
		verdict = b.s.handle(BackendFanotify, a, emit)
	}
	if r.ev.Mask&unix.FAN_CLOSE_WRITE != 0 {
		a.Op, a.Perm, a.Answered = OpCloseWrite, false, false
		b.s.handle(BackendFanotify, a, emit)
	}
}

func (b *fanBackend) respond(fd int, resp uint32) {
	var r [8]byte // struct fanotify_response
	binary.NativeEndian.PutUint32(r[0:4], uint32(int32(fd)))
	binary.NativeEndian.PutUint32(r[4:8], resp)
	if _, err := unix.Write(b.content, r[:]); err != nil {
		b.s.log.Error("fanotify permission response failed", logkey.Error, err)
	}
}

// nameEvent handles create, delete and rename from the FID group.
func (b *fanBackend) nameEvent(ev rawEvent, emit func(event.Event)) {
	if b.overflow(ev) {
		return
	}
	if ev.FD >= 0 {
		_ = unix.Close(int(ev.FD)) // not expected in a FID group; never leak it
	}
	if int(ev.PID) == b.s.cfg.Self {
		return
	}
	var cur, old, nu string
	for _, fi := range ev.Infos {
		p := b.resolve(fi)
		switch fi.Type {
		case infoDFIDName:
			cur = p
		case infoOldDFIDName:
			old = p
		case infoNewDFIDName:
			nu = p
		}
	}
	isDir := ev.Mask&unix.FAN_ONDIR != 0
	a := &Activity{PID: int(ev.PID), Dir: isDir}
	existing := emit // files already inside a new folder: reported unless the filesystem mark did
	if b.fsMark {
		existing = nil
	}
	switch {
	case ev.Mask&unix.FAN_CREATE != 0 && cur != "":
		if isDir {
			b.addTree(cur, true, existing)
		}
		a.Op, a.Path = OpCreate, cur
	case ev.Mask&unix.FAN_DELETE != 0 && cur != "":
		if isDir {
			b.forget(cur)
		}
		a.Op, a.Path = OpDelete, cur
	case ev.Mask&unix.FAN_RENAME != 0:
		switch {
		case nu != "":
			if isDir {
				b.addTree(nu, true, existing)
			}
			a.Op, a.Path, a.OldPath = OpRename, nu, old
		case old != "": // moved out of the watched trees: gone from here
			if isDir {
				b.forget(old) // its handle must not keep resolving to a watched path
			}
			a.Op, a.Path = OpDelete, old
		default:
			return
		}
	case ev.Mask&unix.FAN_MOVED_TO != 0 && cur != "":
		if isDir {
			b.addTree(cur, true, existing)
		}
		a.Op, a.Path = OpRename, cur
	default:
		return
	}
	if !b.s.under(a.Path) {
		return
	}
	b.s.handle(BackendFanotify, a, emit)
}
