package action

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const supportsQuarantine = true

// quarantineFile moves the regular file at resolved (already checked to be
// under an allowed root) into QuarantineDir/<id>/ with mode 0000 and writes
// its metadata beside it. The file is opened without following symlinks
// and identified by device and inode, so a path swapped under our feet is
// detected rather than followed.
func (e *Executor) quarantineFile(cmdID, resolved string) (QuarantineEntry, string, error) {
	var q QuarantineEntry
	fd, err := unix.Open(resolved, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ELOOP) {
		return q, "", refuseTarget("%s became a symlink: not followed", resolved)
	}
	if err != nil {
		return q, "", fmt.Errorf("open: %w", err)
	}
	f := os.NewFile(uintptr(fd), resolved)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return q, "", fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return q, "", refuseTarget("%s is not a regular file", resolved)
	}
	// What the kernel opened must still be under a root: a directory
	// swapped for a symlink between the check and the open shows here.
	if real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil && real != resolved {
		if err := e.underRoot(real); err != nil {
			return q, "", refuseTarget("%s now opens %s: %v", resolved, real, err)
		}
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return q, "", fmt.Errorf("read: %w", err)
	}
	now := time.Now().UTC()
	q = QuarantineEntry{
		ID: newQuarantineID(now), OriginalPath: resolved, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n,
		Mode: fmt.Sprintf("%04o", st.Mode&0o7777), UID: int(st.Uid), GID: int(st.Gid),
		MTime: time.Unix(st.Mtim.Unix()).UTC(), CommandID: cmdID, QuarantinedAt: now, Links: uint64(st.Nlink),
	}
	dir := filepath.Join(e.qdir, q.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return q, "", err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(dir)
		}
	}()
	// Metadata first: whatever happens next, the quarantine knows where
	// its content came from.
	if err := writeMeta(dir, q); err != nil {
		return q, "", err
	}
	dst := filepath.Join(dir, QuarantineFileName)
	err = os.Rename(resolved, dst)
	switch {
	case errors.Is(err, unix.EXDEV):
		if q, err = e.copyOut(f, &st, resolved, dst, q); err != nil {
			return q, "", err
		}
	case err != nil:
		return q, "", fmt.Errorf("move: %w", err)
	default:
		var got unix.Stat_t
		if err := unix.Lstat(dst, &got); err != nil || got.Dev != st.Dev || got.Ino != st.Ino {
			// Another file was renamed in between: put it back untouched.
			if err := unix.Renameat2(unix.AT_FDCWD, dst, unix.AT_FDCWD, resolved, unix.RENAME_NOREPLACE); err != nil {
				ok = true // never delete a file we could not put back
				return q, "", fmt.Errorf("%s was replaced while being quarantined and could not be put back (%v): it is held in %s", resolved, err, dir)
			}
			return q, "", refuseTarget("%s was replaced while being quarantined: not quarantined", resolved)
		}
	}
	// Root-owned, no permission bits, in a 0700 root directory: nobody but
	// root can read it and nobody can execute it.
	if err := os.Lchown(dst, 0, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return q, "", fmt.Errorf("chown: %w", err)
	}
	if err := os.Chmod(dst, 0); err != nil {
		return q, "", fmt.Errorf("chmod: %w", err)
	}
	ok = true
	if err := errors.Join(syncDir(dir), syncDir(filepath.Dir(resolved)), syncDir(e.qdir)); err != nil {
		return q, "", fmt.Errorf("quarantined, but fsync failed: %w", err)
	}
	note := ""
	if q.Links > 1 {
		note = fmt.Sprintf("the file had %d hard links: the other %d still exist", q.Links, q.Links-1)
	}
	return q, note, nil
}

// copyOut moves across file systems: copy from the open descriptor, fsync,
// then unlink the original only if the path still names the same inode.
func (e *Executor) copyOut(f *os.File, st *unix.Stat_t, resolved, dst string, q QuarantineEntry) (QuarantineEntry, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return q, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return q, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), f)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return q, fmt.Errorf("copy: %w", err)
	}
	// The copy is what is kept: record its digest (the file may have been
	// written to since it was hashed).
	if sum := hex.EncodeToString(h.Sum(nil)); sum != q.SHA256 || n != q.Size {
		q.SHA256, q.Size = sum, n
		if err := writeMeta(filepath.Dir(dst), q); err != nil {
			return q, err
		}
	}
	var now unix.Stat_t
	if err := unix.Lstat(resolved, &now); err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
		return q, refuseTarget("%s was replaced while being quarantined: not quarantined", resolved)
	}
	if err := unix.Unlink(resolved); err != nil {
		return q, fmt.Errorf("remove original: %w", err)
	}
	return q, nil
}

func writeMeta(dir string, q QuarantineEntry) error {
	raw, err := json.MarshalIndent(q, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, QuarantineMetaName), raw, 0o600)
}

// restoreFile moves the quarantined content back without ever replacing a
// file at the original path (RENAME_NOREPLACE, or O_EXCL across file
// systems), then restores owner, mode and modification time. The original
// folder is one users may write: it is opened without following a link a
// user could have planted (atomicfile.OpenDir), the file is placed
// relative to that descriptor, and owner, mode and time are set on an open
// descriptor of the restored inode, so a name swapped for a symlink after
// the move cannot redirect a chown or chmod onto another file.
func (e *Executor) restoreFile(q QuarantineEntry) error {
	mode, err := strconv.ParseUint(q.Mode, 8, 32)
	if err != nil || mode > 0o7777 {
		return fmt.Errorf("metadata mode %q is not octal permission bits", q.Mode)
	}
	src := filepath.Join(e.qdir, q.ID, QuarantineFileName)
	dst := q.OriginalPath
	in, err := openNoFollow(src)
	if err != nil {
		return err
	}
	defer in.Close()
	dir, err := atomicfile.OpenDir(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer dir.Close()
	name := filepath.Base(dst)
	held := in // the descriptor whose inode ends up at dst
	err = unix.Renameat2(unix.AT_FDCWD, src, dir.Fd(), name, unix.RENAME_NOREPLACE)
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%s: %w", dst, ErrExists)
	case errors.Is(err, unix.EXDEV):
		var out *os.File
		if out, err = copyNoReplace(in, dir, name); err == nil {
			defer out.Close()
			held = out
			err = os.Remove(src)
		}
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// A file system without RENAME_NOREPLACE: link(2) fails on an
		// existing name just the same.
		if err = unix.Linkat(unix.AT_FDCWD, src, dir.Fd(), name, 0); err == nil {
			err = os.Remove(src)
		}
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: %w", dst, ErrExists)
		}
	}
	if err != nil {
		return err
	}
	fd := int(held.Fd())
	// chown clears setuid and setgid: owner first, then the mode.
	if err := unix.Fchown(fd, q.UID, q.GID); err != nil {
		return fmt.Errorf("restored, but chown failed: %w", err)
	}
	if err := unix.Fchmod(fd, uint32(mode)); err != nil {
		return fmt.Errorf("restored, but chmod failed: %w", err)
	}
	mt := unix.NsecToTimespec(q.MTime.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), []unix.Timespec{mt, mt}, 0); err != nil {
		return fmt.Errorf("restored, but setting mtime failed: %w", err)
	}
	return unix.Fsync(dir.Fd())
}

func openNoFollow(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// copyNoReplace copies in to a new file name in dir (O_EXCL|O_NOFOLLOW, so
// neither an existing file nor a planted link is written) and returns it
// open.
func copyNoReplace(in *os.File, dir *atomicfile.Dir, name string) (*os.File, error) {
	fd, err := unix.Openat(dir.Fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir.Path(), name), ErrExists)
	}
	if err != nil {
		return nil, err
	}
	out := os.NewFile(uintptr(fd), filepath.Join(dir.Path(), name))
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if err != nil {
		out.Close()
		_ = unix.Unlinkat(dir.Fd(), name, 0)
		return nil, err
	}
	return out, nil
}
