package fileactivity

// Marks: which directories and filesystems fanotify watches, and the
// directory handles that turn name events back into paths.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
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
		if gone(err) {
			return nil
		}
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
			if err := b.markDir(p); gone(err) {
				return filepath.SkipDir
			} else if err != nil {
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
