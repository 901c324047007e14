package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/sensor/proctree"

	"github.com/tillwatch/tillwatch/sensor/procclock"
)

// procFS reads process details from a procfs tree rooted at root. It is plain
// file parsing, so tests point it at a fake tree under testdata/ on any OS.
type procFS struct {
	root string
	boot time.Time            // wall-clock time of boot, for start times
	user func(uid int) string // uid to name; nil leaves names empty
}

// pids lists the process ids under root.
func (f procFS) pids() ([]int, error) {
	des, err := os.ReadDir(f.root)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", f.root, err)
	}
	var out []int
	for _, de := range des {
		if pid, err := strconv.Atoi(de.Name()); err == nil && pid > 0 && de.IsDir() {
			out = append(out, pid)
		}
	}
	return out, nil
}

// read returns what procfs says about pid. The error is non-nil only when
// stat cannot be read or parsed, which means the process is gone (or pid is
// not one); every other file is best effort, since kernel threads have no
// exe, zombies no cmdline, and a process can exit between two reads.
func (f procFS) read(pid int) (proctree.Proc, error) {
	p, _, err := f.readState(pid)
	return p, err
}

// readState is read that also reports whether the details are incomplete:
// the process had already exited (a zombie, or still tearing down its
// memory), so only stat is left, without executable or command line. A
// kernel thread, which never has an executable, is not incomplete.
func (f procFS) readState(pid int) (p proctree.Proc, incomplete bool, err error) {
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	// exe and cmdline first: they vanish the moment a process exits, while
	// stat survives as a zombie. A short command (base64 -d, chmod +x) lives
	// a millisecond, and these two fields are what detectors need.
	// exe keeps a " (deleted)" suffix when the file was removed after exec;
	// it is kept, since a payload deleting itself is worth seeing.
	exe, _ := os.Readlink(filepath.Join(dir, "exe"))
	var args []string
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		args = parseCmdline(b)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		if exe != "" || len(args) > 0 {
			// Gone by now, but what matters was caught.
			return proctree.Proc{PID: pid, UID: proctree.UnknownUID, Executable: exe, Args: args,
				CommandLine: strings.Join(args, " "), Name: nameFromImage(exe, args)}, true, nil
		}
		return proctree.Proc{}, false, err
	}
	st, err := parseStat(raw)
	if err != nil {
		return proctree.Proc{}, false, fmt.Errorf("%s/stat: %w", dir, err)
	}
	p = proctree.Proc{PID: pid, PPID: st.ppid, UID: proctree.UnknownUID}
	if !f.boot.IsZero() {
		p.Start = procclock.Start(f.boot, st.startTicks)
	}
	p.Args, p.CommandLine, p.Executable = args, strings.Join(args, " "), exe
	p.Cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	comm := st.comm
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		comm = strings.TrimSuffix(string(b), "\n")
	}
	p.Name = procName(comm, p.Executable, p.Args)
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		if uid, err := parseStatusUID(b); err == nil {
			p.UID = uid
			if f.user != nil {
				p.User = f.user(uid)
			}
		}
	}
	const pfKthread = 0x00200000 // PF_KTHREAD
	incomplete = st.state == 'Z' || st.state == 'X' || (p.Executable == "" && st.flags&pfKthread == 0)
	return p, incomplete, nil
}

// readAll reads every process under root, oldest first, skipping those that
// vanish during the scan.
func (f procFS) readAll() ([]proctree.Proc, error) {
	pids, err := f.pids()
	if err != nil {
		return nil, err
	}
	out := make([]proctree.Proc, 0, len(pids))
	for _, pid := range pids {
		if p, err := f.read(pid); err == nil {
			out = append(out, p)
		}
	}
	// Parents before children, so the table can record each child's
	// parent start as it goes.
	slices.SortStableFunc(out, func(a, b proctree.Proc) int { return a.Start.Compare(b.Start) })
	return out, nil
}

// statFields is what the sensor uses from /proc/<pid>/stat.
type statFields struct {
	comm       string
	state      byte
	flags      uint64 // PF_* flags
	ppid       int
	startTicks uint64
}

// parseStat parses /proc/<pid>/stat. comm is taken between the first '('
// and the last ')', since a process can put spaces and parentheses in its
// own name to confuse naive parsers.
func parseStat(b []byte) (statFields, error) {
	var s statFields
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return s, errors.New("no (comm) field")
	}
	s.comm = string(b[open+1 : closing])
	// After comm: state(3) ppid(4) ... starttime(22), 1-based per proc(5).
	rest := strings.Fields(string(b[closing+1:]))
	if len(rest) < 20 {
		return s, fmt.Errorf("%d fields after comm, want at least 20", len(rest))
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return s, fmt.Errorf("ppid: %w", err)
	}
	start, err := strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return s, fmt.Errorf("starttime: %w", err)
	}
	flags, err := strconv.ParseUint(rest[6], 10, 64)
	if err != nil {
		return s, fmt.Errorf("flags: %w", err)
	}
	s.state, s.flags, s.ppid, s.startTicks = rest[0][0], flags, ppid, start
	return s, nil
}

// parseStatusUID returns the effective uid from /proc/<pid>/status (the
// second column of "Uid:"), which is the identity the process acts with.
func parseStatusUID(b []byte) (int, error) {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return 0, fmt.Errorf("short Uid line %q", strings.TrimSpace(line))
		}
		return strconv.Atoi(f[1])
	}
	return 0, errors.New("no Uid line")
}

// parseCmdline splits /proc/<pid>/cmdline (NUL-separated, NUL-terminated).
// It returns nil for an empty cmdline (kernel threads, zombies).
func parseCmdline(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// procName picks process.name. comm is what the kernel calls the process
// (what ps shows, and right for multi-call binaries like busybox), but it is
// cut to 15 bytes; when it was cut, the executable's or argv[0]'s base name
// that it is a prefix of is the full name.
// nameFromImage names a process whose comm could not be read.
func nameFromImage(exe string, args []string) string {
	if exe != "" {
		return strings.TrimSuffix(filepath.Base(exe), " (deleted)")
	}
	return filepath.Base(args[0])
}

func procName(comm, exe string, args []string) string {
	const commMax = 15 // TASK_COMM_LEN - 1
	if len(comm) < commMax {
		return comm
	}
	cands := []string{strings.TrimSuffix(filepath.Base(exe), " (deleted)")}
	if len(args) > 0 {
		cands = append(cands, filepath.Base(args[0]))
	}
	for _, c := range cands {
		if len(c) > len(comm) && strings.HasPrefix(c, comm) {
			return c
		}
	}
	return comm
}
