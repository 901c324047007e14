package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds how many trusted symlinks OpenDir follows, as the kernel
// bounds a lookup (ELOOP after 40).
const maxLinks = 40

// Dir is a directory opened once, whose files are then created, read,
// renamed and removed relative to its descriptor, never by path. Use it for
// every write root makes in a folder other users can write: a name there
// may be a symlink planted to redirect the write, and a parent directory
// may be swapped for a link between a check and the write. Names passed to
// its methods are single path components; none of them follows a symlink.
type Dir struct {
	fd   int
	path string
}

// OpenDir opens the absolute directory path one component at a time with
// O_NOFOLLOW. A symlink on the way is followed only when root owns it and
// the directory holding it is root's and writable by nobody else (so
// /var/run -> /run works, a link a user planted does not); any other
// symlink is an error.
func OpenDir(path string) (*Dir, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("open directory %s: not an absolute path", path)
	}
	if slices.Contains(strings.Split(path, "/"), "..") {
		return nil, fmt.Errorf("open directory %s: '..' is not allowed", path)
	}
	fd, err := openDir(path)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", path, err)
	}
	return &Dir{fd: fd, path: filepath.Clean(path)}, nil
}

func openDir(path string) (int, error) {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	pending := splitPath(path)
	links := 0
	for len(pending) > 0 {
		comp := pending[0]
		pending = pending[1:]
		// '..' only comes from a trusted link's target (the path itself
		// may not hold one): the kernel's parent of where the walk is,
		// as a lookup through that link would go.
		next, err := unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			fd = next
			continue
		}
		if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
			return closeErr(fd, fmt.Errorf("%s: %w", comp, err))
		}
		target, terr := trustedLink(fd, comp)
		if terr != nil {
			return closeErr(fd, terr)
		}
		if links++; links > maxLinks {
			return closeErr(fd, fmt.Errorf("%s: too many symlinks", path))
		}
		if filepath.IsAbs(target) {
			unix.Close(fd)
			if fd, err = unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
				return -1, err
			}
		}
		pending = append(splitPath(target), pending...)
	}
	return fd, nil
}

// trustedLink returns the target of the symlink comp in directory dirfd if
// root owns both the link and the directory and nobody else can write the
// directory; otherwise an error saying why it is not followed.
func trustedLink(dirfd int, comp string) (string, error) {
	var ls, ds unix.Stat_t
	if err := unix.Fstatat(dirfd, comp, &ls, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", fmt.Errorf("%s: %w", comp, err)
	}
	if ls.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", fmt.Errorf("%s: not a directory", comp)
	}
	if err := unix.Fstat(dirfd, &ds); err != nil {
		return "", err
	}
	if ls.Uid != 0 || ds.Uid != 0 || ds.Mode&0o022 != 0 {
		return "", fmt.Errorf("%s is a symlink that a user other than root could have placed: not followed", comp)
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, comp, buf)
	if err != nil {
		return "", fmt.Errorf("%s: %w", comp, err)
	}
	return string(buf[:n]), nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func closeErr(fd int, err error) (int, error) {
	unix.Close(fd)
	return -1, err
}

// Path is the directory's path as given to OpenDir.
func (d *Dir) Path() string { return d.path }

// Close releases the descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q is not a single file name", name)
	}
	return nil
}

// Write replaces name with data, atomically: a temporary file with a random
// name is created exclusively (O_EXCL|O_NOFOLLOW: a planted file or link of
// that name makes it fail rather than be followed), written, fsynced,
// renamed over name (which replaces a symlink there, never its target) and
// the directory fsynced.
func (d *Dir) Write(name string, data []byte, perm os.FileMode) error {
	if err := checkName(name); err != nil {
		return err
	}
	var tmp string
	fd := -1
	for range 8 {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return err
		}
		tmp = "." + name + "." + hex.EncodeToString(rnd[:]) + ".tmp"
		if len(tmp) > 255 {
			tmp = "." + hex.EncodeToString(rnd[:]) + ".tmp"
		}
		var err error
		fd, err = unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: create temporary: %w", filepath.Join(d.path, name), err)
		}
		break
	}
	if fd < 0 {
		return fmt.Errorf("%s: no free temporary name", filepath.Join(d.path, name))
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, tmp))
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = unix.Unlinkat(d.fd, tmp, 0)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.path, name), err)
	}
	ok = true
	if err := f.Close(); err != nil {
		return err
	}
	_ = unix.Fsync(d.fd) // best effort, as Write
	return nil
}

// OpenRegular opens name for reading without following a symlink and
// without blocking on a FIFO, and returns it only if it is a regular file.
func (d *Dir) OpenRegular(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, name))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), ErrNotRegular)
	}
	return f, nil
}

// ReadRegular reads name (see OpenRegular), failing if it holds more than
// max bytes.
func (d *Dir) ReadRegular(name string, max int64) ([]byte, error) {
	f, err := d.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.Name(), max)
	}
	return b, nil
}

// Remove unlinks name (a file or a symlink, never what it points at).
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}

// Fd is the directory's descriptor, for *at calls the methods do not cover.
// It stays owned by d.
func (d *Dir) Fd() int { return d.fd }

// OpenFile opens name with flag (os.O_RDWR and the like; O_NOFOLLOW and
// O_NONBLOCK are added) and returns it only if it is a regular file.
func (d *Dir) OpenFile(name string, flag int) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, name, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, name))
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), ErrNotRegular)
	}
	return f, nil
}

// Rename renames oldName to newName within the directory.
func (d *Dir) Rename(oldName, newName string) error {
	if err := errors.Join(checkName(oldName), checkName(newName)); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, oldName, d.fd, newName); err != nil {
		return &os.LinkError{Op: "rename", Old: filepath.Join(d.path, oldName), New: filepath.Join(d.path, newName), Err: err}
	}
	return nil
}

// Mkdir creates the directory name.
func (d *Dir) Mkdir(name string, perm os.FileMode) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Mkdirat(d.fd, name, uint32(perm.Perm())); err != nil {
		return &os.PathError{Op: "mkdir", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}

// RemoveDir removes the empty directory name (never a symlink's target).
func (d *Dir) RemoveDir(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err != nil {
		return &os.PathError{Op: "remove", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}

// Private checks that name ("." for the directory itself) is owned by the
// effective user, readable or writable by nobody else, not a symlink and,
// for a file, has a single link: something a user other than the caller
// cannot have created, replaced or hard-linked there. The caller's own
// state in a folder others can write (a simulator's manifest) is trusted
// only if it passes.
func (d *Dir) Private(name string) error {
	var st unix.Stat_t
	var err error
	if name == "." {
		err = unix.Fstat(d.fd, &st)
	} else if err = checkName(name); err == nil {
		err = unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	p := filepath.Join(d.path, name)
	switch {
	case err != nil:
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%s is a symlink", p)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is owned by uid %d, not by uid %d", p, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return fmt.Errorf("%s has mode %04o: others may read or write it", p, st.Mode&0o7777)
	case st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink != 1:
		return fmt.Errorf("%s has %d hard links", p, st.Nlink)
	}
	return nil
}

// Names lists the directory's entries (not "." or "..").
func (d *Dir) Names() ([]string, error) {
	dup, err := unix.Dup(d.fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), d.path)
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}
