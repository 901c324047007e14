package fileguard

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// intent is what an opener blocked in a permission request means to do.
type intent int

const (
	intentUnknown intent = iota
	intentRead
	intentWrite
)

func (i intent) String() string {
	switch i {
	case intentRead:
		return "read"
	case intentWrite:
		return "write"
	}
	return "unknown"
}

// Open flags (the same on every Linux architecture this builds for).
const (
	oAccMode = 0x3
	oCreat   = 0x40
	oTrunc   = 0x200
)

// openSyscalls maps, per architecture, the syscall numbers of open(2),
// openat(2) and creat(2) to the index of their flags argument (-1: creat,
// always a write).
var openSyscalls = map[string]map[int]int{
	"amd64": {2: 1, 257: 2, 85: -1},
	"arm64": {56: 2},
	"386":   {5: 1, 295: 2, 8: -1},
}

// waitSyscalls lists, per architecture, the syscalls a thread of a busy
// program commonly sleeps in that never open a file (futex, poll, read,
// write, sleep, accept, wait ...): a thread in one of them cannot be the
// opener fanotify holds. Any other syscall (openat2, open_by_handle_at,
// io_uring_enter, execve, one this list does not know) might be, so it
// keeps a read from being believed. An architecture without a list is
// only slower: its multi-threaded readers read as unknown.
var waitSyscalls = map[string]map[int]bool{
	"amd64": set(0, 1, 3, 7, 17, 18, 19, 20, 23, 24, 34, 35, 42, 43, 44, 45, 46, 47, 61, 74, 75, 128, 130, 202, 217, 230, 232, 247, 270, 271, 281, 288, 441, 449),
	"arm64": set(22, 57, 61, 63, 64, 65, 66, 67, 68, 72, 73, 82, 83, 95, 98, 101, 115, 124, 133, 137, 202, 203, 206, 207, 211, 212, 242, 260, 441, 449),
}

func set(nrs ...int) map[int]bool {
	m := make(map[int]bool, len(nrs))
	for _, nr := range nrs {
		m[nr] = true
	}
	return m
}

// intentReader reads what an opener blocked in a permission request means
// to do, from /proc/PID/syscall: while fanotify holds the opener, the
// blocked thread's syscall number and arguments are stable there; fanotify
// itself does not say whether the open is for reading or writing.
//
// fanotify names the process, not the thread that opened, and any thread
// can sit in an open of its own: a process could park its main thread in
// an open for reading (of a FIFO, which blocks until a writer comes) while
// another thread opens a file for writing. So a read is believed only from
// a single-threaded process's one thread, or when no other thread could be
// the opener (each is in an open for reading, or asleep in a syscall that
// opens nothing); an open for writing by any thread counts.
//
// It runs for every permission event in the watched trees, in the read
// loop every opener waits on, so it keeps the descriptors of each recent
// opener's /proc/PID/syscall and /proc/PID/stat (whose thread count
// spares a single-threaded process, the common case, the walk over its
// threads) and reads them with one pread each. A descriptor outlives
// nothing it should not: once its process is gone the read fails (ESRCH)
// and the pid's files are opened again, so a reused pid is never answered
// for by its predecessor. Not safe for concurrent use (the guard
// serialises).
type intentReader struct {
	procRoot string
	table    map[int]int
	wait     map[int]bool
	files    map[int]*procFiles
	buf      []byte
}

// procFiles are the descriptors kept for one process.
type procFiles struct{ syscall, stat *os.File }

func (f *procFiles) close() {
	_ = f.syscall.Close()
	_ = f.stat.Close()
}

// maxIntentFiles bounds the processes whose descriptors are kept open.
const maxIntentFiles = 64

// maxIntentThreads bounds the threads read for one event: a process with
// more reads as unknown unless one of the first is opening for writing.
const maxIntentThreads = 64

func newIntentReader(procRoot string) *intentReader {
	return &intentReader{procRoot: procRoot, table: openSyscalls[runtime.GOARCH], wait: waitSyscalls[runtime.GOARCH], files: map[int]*procFiles{}, buf: make([]byte, 512)}
}

// read returns what pid's opener means to do (see intentReader).
func (r *intentReader) read(pid int) intent {
	if pid <= 0 || r.table == nil {
		return intentUnknown
	}
	lead, threads := r.leader(pid)
	switch {
	case lead == intentWrite:
		return intentWrite
	case threads == 1:
		return lead // the only thread is the opener
	}
	return r.threads(pid)
}

// leader reads the thread-group leader's syscall and, unless it is an open
// for writing (which settles it), the thread count (0
// when unreadable).
func (r *intentReader) leader(pid int) (intent, int) {
	line, ok := r.pread(pid, syscallFile)
	if !ok {
		return intentUnknown, 0
	}
	in := parseIntent(line, r.table)
	if in == intentWrite {
		return in, 0 // a write counts whatever the other threads do
	}
	stat, ok := r.pread(pid, statFile)
	if !ok {
		return intentUnknown, 0
	}
	return in, parseThreads(stat)
}

func syscallFile(f *procFiles) *os.File { return f.syscall }
func statFile(f *procFiles) *os.File    { return f.stat }

// pread reads one of pid's kept /proc files with one pread, opening them
// on first use, and once more when the read fails (its process is gone:
// the pid may be someone else's now).
func (r *intentReader) pread(pid int, file func(*procFiles) *os.File) (string, bool) {
	for attempt := 0; attempt < 2; attempt++ {
		f := r.files[pid]
		if f == nil {
			var err error
			if f, err = r.open(pid); err != nil {
				return "", false
			}
		}
		n, err := file(f).ReadAt(r.buf, 0)
		if n > 0 && (err == nil || errors.Is(err, io.EOF)) {
			return string(r.buf[:n]), true
		}
		f.close()
		delete(r.files, pid)
	}
	return "", false
}

func (r *intentReader) open(pid int) (*procFiles, error) {
	dir := filepath.Join(r.procRoot, strconv.Itoa(pid))
	sc, err := os.Open(filepath.Join(dir, "syscall"))
	if err != nil {
		return nil, err
	}
	st, err := os.Open(filepath.Join(dir, "stat"))
	if err != nil {
		_ = sc.Close()
		return nil, err
	}
	if len(r.files) >= maxIntentFiles {
		for p, old := range r.files {
			old.close()
			delete(r.files, p)
			break
		}
	}
	f := &procFiles{syscall: sc, stat: st}
	r.files[pid] = f
	return f, nil
}

// threads reads every thread of a multi-threaded process.
func (r *intentReader) threads(pid int) intent {
	dir := filepath.Join(r.procRoot, strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return intentUnknown
	}
	reading, doubt := false, false
	for i, t := range tasks {
		if i >= maxIntentThreads {
			return intentUnknown // the rest could hold the opener
		}
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "syscall"))
		if err != nil {
			continue // the thread has exited: it is not the opener
		}
		line := string(b)
		switch in := parseIntent(line, r.table); {
		case in == intentWrite:
			return intentWrite
		case in == intentRead:
			reading = true
		case !r.asleep(line):
			// This thread might be the opener, by a way whose intent
			// this reader cannot see: the read is not believed (a
			// write by a later thread still counts).
			doubt = true
		}
	}
	if reading && !doubt {
		return intentRead
	}
	return intentUnknown
}

// asleep reports a thread that cannot be the opener: blocked in a syscall
// that opens nothing. A thread shown "running" is not: the opener itself
// reads so between queueing its event and going to sleep.
func (r *intentReader) asleep(line string) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	nr, err := strconv.Atoi(f[0])
	return err == nil && r.wait[nr]
}

// parent returns pid's parent (0 when unreadable), from the kept
// /proc/PID/stat descriptor.
func (r *intentReader) parent(pid int) int {
	if pid <= 0 {
		return 0
	}
	stat, ok := r.pread(pid, statFile)
	if !ok {
		return 0
	}
	return parseParent(stat)
}

// parseParent reads the parent pid from a /proc/PID/stat line (field 4).
func parseParent(stat string) int { return statField(stat, 4) }

// parseThreads reads the thread count from a /proc/PID/stat line (field
// 20). 0 when unreadable.
func parseThreads(stat string) int { return statField(stat, 20) }

// statField reads the n-th (1-based) numeric field of a /proc/PID/stat
// line, 0 when unreadable. The command name, field 2, is in parentheses
// and may hold spaces, so fields are counted after its last ')'.
func statField(stat string, n int) int {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	if len(f) <= n-3 {
		return 0
	}
	v, err := strconv.Atoi(f[n-3])
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// parseIntent reads one /proc/.../syscall line: "nr arg0 arg1 ... sp pc",
// arguments in hex.
func parseIntent(line string, table map[int]int) intent {
	f := strings.Fields(line)
	if len(f) < 4 {
		return intentUnknown
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil {
		return intentUnknown
	}
	idx, ok := table[nr]
	if !ok {
		return intentUnknown
	}
	if idx < 0 {
		return intentWrite
	}
	if 1+idx >= len(f) {
		return intentUnknown
	}
	flags, err := strconv.ParseUint(strings.TrimPrefix(f[1+idx], "0x"), 16, 64)
	if err != nil {
		return intentUnknown
	}
	if flags&oAccMode != 0 || flags&(oCreat|oTrunc) != 0 {
		return intentWrite
	}
	return intentRead
}
