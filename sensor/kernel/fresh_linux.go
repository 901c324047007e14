package kernel

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// confirmFresh finds the file named base that the stopped process pid runs
// (its executable, or a script among its arguments) and reports whether it
// is the file the tree wrote: the inode ino when the kernel saw the
// write-open, else a file that changed (ctime) at or after since. It
// returns the file's path as the process names it and a path that reads
// that very file through procfs.
func confirmFresh(procRoot string, pid int, base string, ino uint64, since time.Time) (shown, read string, ok bool) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	type cand struct{ shown, read string }
	var cands []cand
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		exe = strings.TrimSuffix(exe, " (deleted)")
		if filepath.Base(exe) == base {
			// Through the link: the inode the process runs, even if the
			// name was replaced or removed since.
			cands = append(cands, cand{exe, filepath.Join(dir, "exe")})
		}
	}
	// A script: the kernel ran its interpreter with the script's path as
	// an argument.
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		for _, a := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
			if a == "" || filepath.Base(a) != base {
				continue
			}
			if filepath.IsAbs(a) {
				cands = append(cands, cand{a, filepath.Join(dir, "root", a)})
			} else {
				cands = append(cands, cand{a, filepath.Join(dir, "cwd", a)})
			}
		}
	}
	for _, c := range cands {
		fi, err := os.Stat(c.read)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		st, isStat := fi.Sys().(*syscall.Stat_t)
		if !isStat {
			continue
		}
		if ino != 0 && st.Ino == ino || ino == 0 && !time.Unix(st.Ctim.Sec, st.Ctim.Nsec).Before(since) {
			return c.shown, c.read, true
		}
	}
	if len(cands) > 0 {
		return cands[0].shown, cands[0].read, false
	}
	return "", "", false
}

// resume lets a stopped process go on.
func resume(pid int) error { return syscall.Kill(pid, syscall.SIGCONT) }

// childrenIn maps each pid under procRoot to its children.
func childrenIn(procRoot string) map[int][]int {
	out := map[int][]int{}
	des, err := os.ReadDir(procRoot)
	if err != nil {
		return out
	}
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, de.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			out[ppid] = append(out[ppid], pid)
		}
	}
	return out
}
