package fileactivity

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

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
// N+1, so the guard has scored N before it answers N+1.
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
	b := &fanBackend{s: s, names: -1, dirs: map[string]string{}, outside: map[string]bool{}, mounts: map[[8]byte]int{}}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_MARKS,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err == nil {
		b.perm = true
	} else {
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
	s.log.Info("file activity on fanotify", "permission_events", b.perm, "name_events", b.names >= 0, "name_marks", s.nameMarks)
	return b, nil
}

// How the name group marks.
const (
	nameMarksFilesystem = "filesystem"
	nameMarksDirectory  = "directory"
)

// markFilesystems puts one filesystem mark per file system of the watched
// roots on the name group. All or nothing: on any refusal the marks made
// are flushed and the name group falls back to per-directory marks.
func (b *fanBackend) markFilesystems() error {
	nmask := uint64(unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_ONDIR)
	var err error
	for _, root := range b.s.cfg.Paths {
		var fsid [8]byte
		if fsid, err = fsidOf(root); err != nil {
			break
		}
		if _, ok := b.mounts[fsid]; ok {
			continue
		}
		var fd int
		if fd, err = unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			break
		}
		b.mounts[fsid] = fd
		flags := uint(unix.FAN_MARK_ADD | unix.FAN_MARK_FILESYSTEM)
		if b.rename {
			err = unix.FanotifyMark(b.names, flags, nmask|unix.FAN_RENAME, unix.AT_FDCWD, root)
			if errors.Is(err, unix.EINVAL) {
				b.rename = false // kernel < 5.17: pair-less moves
			}
		}
		if !b.rename {
			err = unix.FanotifyMark(b.names, flags, nmask|unix.FAN_MOVED_FROM|unix.FAN_MOVED_TO, unix.AT_FDCWD, root)
		}
		if err != nil {
			err = fmt.Errorf("filesystem mark on %s: %w", root, err)
			break
		}
	}
	if err != nil {
		_ = unix.FanotifyMark(b.names, unix.FAN_MARK_FLUSH|unix.FAN_MARK_FILESYSTEM, 0, unix.AT_FDCWD, "/")
		b.closeMounts()
		return err
	}
	b.fsMark = true
	return nil
}

func fsidOf(dir string) ([8]byte, error) {
	var st unix.Statfs_t
	var fsid [8]byte
	if err := unix.Statfs(dir, &st); err != nil {
		return fsid, fmt.Errorf("statfs %s: %w", dir, err)
	}
	copy(fsid[:], unsafeFsid(st.Fsid.Val))
	return fsid, nil
}

func (b *fanBackend) closeMounts() {
	for k, fd := range b.mounts {
		_ = unix.Close(fd)
		delete(b.mounts, k)
	}
}

func (b *fanBackend) close() {
	_ = unix.Close(b.content)
	if b.names >= 0 {
		_ = unix.Close(b.names)
	}
	b.closeMounts()
}

// markDir marks one directory in both groups and remembers its handle.
func (b *fanBackend) markDir(dir string) error {
	mask := uint64(unix.FAN_CLOSE_WRITE | unix.FAN_EVENT_ON_CHILD)
	if b.perm {
		mask |= unix.FAN_OPEN_PERM
	}
	if err := unix.FanotifyMark(b.content, markFlags, mask, unix.AT_FDCWD, dir); err != nil {
		return err
	}
	if b.names < 0 {
		return nil
	}
	if b.fsMark {
		return b.remember(dir) // the filesystem mark covers it; the handle speeds up resolution
	}
	nmask := uint64(unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_ONDIR)
	if b.rename {
		if err := unix.FanotifyMark(b.names, markFlags, nmask|unix.FAN_RENAME, unix.AT_FDCWD, dir); err == nil {
			return b.remember(dir)
		} else if !errors.Is(err, unix.EINVAL) {
			return err
		}
		b.rename = false // kernel < 5.17: pair-less moves
	}
	if err := unix.FanotifyMark(b.names, markFlags, nmask|unix.FAN_MOVED_FROM|unix.FAN_MOVED_TO, unix.AT_FDCWD, dir); err != nil {
		return err
	}
	return b.remember(dir)
}

// remember maps the directory's file handle to its path, so FID events
// (which name a directory by handle) resolve without open_by_handle_at.
func (b *fanBackend) remember(dir string) error {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		return fmt.Errorf("name_to_handle_at: %w", err)
	}
	fsid, err := fsidOf(dir)
	if err != nil {
		return err
	}
	key := handleKey(fsid, h.Type(), h.Bytes())
	b.mu.Lock()
	b.dirs[key] = dir
	delete(b.outside, key) // moved in from outside the watched trees
	b.mu.Unlock()
	return nil
}

// unsafeFsid lays out __kernel_fsid_t as the kernel copies it: native endian.
func unsafeFsid(v [2]int32) []byte {
	out := make([]byte, 8)
	binary.NativeEndian.PutUint32(out[0:4], uint32(v[0]))
	binary.NativeEndian.PutUint32(out[4:8], uint32(v[1]))
	return out
}

// addTree marks every directory below root, and root itself with markRoot.
// Symlinks are never followed: WalkDir does not, and marks use
// FAN_MARK_DONT_FOLLOW. With emit set (a directory that appeared at run
// time under per-directory name marks), the files already inside are
// reported as created, since their own events came before the mark; a
// filesystem mark has reported them already.
func (b *fanBackend) addTree(root string, markRoot bool, emit func(event.Event)) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			b.s.lost.WithLabelValues(BackendFanotify, "unreadable").Inc()
			b.s.log.Warn("cannot watch directory; files below it are not covered", logkey.Path, p, logkey.Error, err)
			b.s.health(component, event.HealthDegraded, fmt.Sprintf("cannot read %s: %v", p, err))
			return nil
		}
		if d.IsDir() {
			if p == root && !markRoot {
				return nil
			}
			if err := b.markDir(p); err != nil {
				b.s.lost.WithLabelValues(BackendFanotify, "mark").Inc()
				b.s.health(component, event.HealthDegraded, fmt.Sprintf("cannot mark %s: %v", p, err))
				return filepath.SkipDir
			}
			return nil
		}
		if emit != nil && d.Type().IsRegular() {
			b.s.handle(BackendFanotify, &Activity{Op: OpCreate, Path: p}, emit)
		}
		return nil
	})
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
			if err := b.loop(loopCtx, b.names, func(ev rawEvent) { b.nameEvent(ev, emit) }); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	if err := b.loop(loopCtx, b.content, func(ev rawEvent) { b.contentEvent(ev, emit) }); err != nil {
		errs <- err
		cancel()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// loop reads fd until ctx is done. Poll with a timeout bounds how long a
// cancelled context waits.
func (b *fanBackend) loop(ctx context.Context, fd int, handle func(rawEvent)) error {
	buf := make([]byte, 64<<10)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if _, err := unix.Poll(pfd, 200); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll fanotify: %w", err)
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read fanotify: %w", err)
		}
		evs, perr := parseEvents(buf[:n])
		for _, ev := range evs {
			handle(ev)
		}
		if perr != nil {
			return perr
		}
	}
	return nil
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

// contentEvent handles a permission request or a completed write. A
// permission request is always answered, whatever happens on the way.
func (b *fanBackend) contentEvent(ev rawEvent, emit func(event.Event)) {
	if b.overflow(ev) || ev.FD < 0 {
		return
	}
	fd := int(ev.FD)
	defer unix.Close(fd)
	perm := ev.Mask&unix.FAN_OPEN_PERM != 0
	verdict := Verdict{}
	if perm {
		defer func() {
			resp := uint32(unix.FAN_ALLOW)
			if verdict.Deny {
				resp = unix.FAN_DENY
			}
			b.respond(fd, resp)
		}()
	}
	if int(ev.PID) == b.s.cfg.Self {
		return
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !b.s.under(path) {
		return
	}
	a := &Activity{Path: path, PID: int(ev.PID), Perm: perm, ReadAt: func(p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) }}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		a.Size = st.Size
	}
	if perm {
		a.Op = OpOpen
		verdict = b.s.handle(BackendFanotify, a, emit)
	}
	if ev.Mask&unix.FAN_CLOSE_WRITE != 0 {
		a.Op, a.Perm = OpCloseWrite, false
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

// resolve turns a FID record into a path; "" for directories not watched
// or names that could escape their directory.
func (b *fanBackend) resolve(fi fidInfo) string {
	if fi.Name == "" || fi.Name == "." || fi.Name == ".." || filepath.Base(fi.Name) != fi.Name {
		return ""
	}
	b.mu.Lock()
	dir, ok := b.dirs[fi.Key]
	out := b.outside[fi.Key]
	b.mu.Unlock()
	if !ok {
		if !b.fsMark || out {
			return ""
		}
		if dir = b.lookup(fi); dir == "" {
			return ""
		}
	}
	return filepath.Join(dir, fi.Name)
}

// lookup resolves a directory handle the filesystem mark reported and not
// seen before, and remembers the answer: its path when it lies in a watched
// tree, else that it does not. A handle that no longer opens (the
// directory is gone) is not remembered.
func (b *fanBackend) lookup(fi fidInfo) string {
	mfd, ok := b.mounts[fi.Fsid]
	if !ok {
		return ""
	}
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(fi.HandleType, fi.Handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return ""
	}
	dir, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	_ = unix.Close(fd)
	if err != nil || strings.HasSuffix(dir, " (deleted)") {
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.s.under(dir) {
		if len(b.outside) >= maxOutside {
			clear(b.outside)
		}
		b.outside[fi.Key] = true
		return ""
	}
	b.dirs[fi.Key] = dir
	return dir
}

// forget drops a deleted directory's handle (and those below it).
func (b *fanBackend) forget(dir string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, p := range b.dirs {
		if p == dir || len(p) > len(dir) && p[:len(dir)+1] == dir+"/" {
			delete(b.dirs, k)
		}
	}
}
