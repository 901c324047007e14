package canary

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func lstatID(p string) (fileID, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// Judge decides whether process pid, stopped by the kernel after it
// opened for writing, renamed, linked or unlinked a file named base, acted
// on a planted decoy rather than a same-named file elsewhere. It is exact
// by file identity: the process holds a planted decoy open for writing
// (/proc/PID/fd and fdinfo under procRoot), or a planted decoy named base
// is gone or is no longer the file planted there (renamed away, replaced,
// unlinked), or is the planted file with other content (truncated in
// place). The process is stopped, so neither can change under the check;
// a decoy replaced by someone else at the same moment is blamed on it.
func (s *Set) Judge(procRoot string, pid int, base string) (hit bool, why string) {
	s.mu.Lock()
	planted := make(map[fileID]string, len(s.ids))
	for p, id := range s.ids {
		planted[id] = p
	}
	var named []string
	for p := range s.m {
		if filepath.Base(p) == base {
			named = append(named, p)
		}
	}
	s.mu.Unlock()
	fdDir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
	if des, err := os.ReadDir(fdDir); err == nil {
		for _, de := range des {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join(fdDir, de.Name()), &st) != nil {
				continue
			}
			p, ok := planted[fileID{dev: uint64(st.Dev), ino: st.Ino}]
			if ok && openForWriting(procRoot, pid, de.Name()) {
				return true, "holds the decoy " + p + " open for writing"
			}
		}
	}
	for _, p := range named {
		s.mu.Lock()
		want, known := s.ids[p]
		s.mu.Unlock()
		id, ok := lstatID(p)
		switch {
		case !ok:
			return true, "the decoy " + p + " is gone"
		case known && id != want:
			return true, "the decoy " + p + " was replaced"
		case s.changedInPlace(p):
			// The same file with other content: truncate(2) by path,
			// which needs no descriptor, leaves nothing else behind.
			return true, "the decoy " + p + " was changed in place (truncated or rewritten)"
		}
	}
	return false, "a file named " + strconv.Quote(base) + " outside the planted decoys; every decoy of that name is intact"
}

// openForWriting reads the access mode of pid's descriptor fd from fdinfo.
func openForWriting(procRoot string, pid int, fd string) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "fdinfo", fd))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			f, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && f&(syscall.O_WRONLY|syscall.O_RDWR) != 0
		}
	}
	return false
}
