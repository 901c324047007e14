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

// intentReader reads what an opener blocked in a permission request means
// to do, from /proc/PID/syscall: while fanotify holds the opener, the
// blocked thread's syscall number and arguments are stable there; fanotify
// itself does not say whether the open is for reading or writing.
//
// It runs for every permission event in the watched trees, in the read
// loop every opener waits on, so it keeps the descriptor of each recent
// opener's /proc/PID/syscall open and reads it with one pread. A
// descriptor outlives nothing it should not: once its process is gone the
// read fails (ESRCH) and the pid's file is opened again, so a reused pid
// is never answered for by its predecessor. Not safe for concurrent use
// (the guard serialises).
type intentReader struct {
	procRoot string
	table    map[int]int
	files    map[int]*os.File
	buf      []byte
}

// maxIntentFiles bounds the descriptors kept open.
const maxIntentFiles = 64

func newIntentReader(procRoot string) *intentReader {
	return &intentReader{procRoot: procRoot, table: openSyscalls[runtime.GOARCH], files: map[int]*os.File{}, buf: make([]byte, 256)}
}

// read returns what pid is doing. The thread-group leader is read first
// (a single-threaded opener, the common case, is answered by one pread);
// when the leader is not in an open, each thread is read (fanotify reports
// the process, not the thread, so any thread in an open-for-write counts).
func (r *intentReader) read(pid int) intent {
	if pid <= 0 || r.table == nil {
		return intentUnknown
	}
	if in := r.leader(pid); in != intentUnknown {
		return in
	}
	return r.threads(pid)
}

func (r *intentReader) leader(pid int) intent {
	for attempt := 0; attempt < 2; attempt++ {
		f := r.files[pid]
		if f == nil {
			var err error
			if f, err = os.Open(filepath.Join(r.procRoot, strconv.Itoa(pid), "syscall")); err != nil {
				return intentUnknown
			}
			if len(r.files) >= maxIntentFiles {
				for p, old := range r.files {
					_ = old.Close()
					delete(r.files, p)
					break
				}
			}
			r.files[pid] = f
		}
		n, err := f.ReadAt(r.buf, 0)
		if n > 0 && (err == nil || errors.Is(err, io.EOF)) {
			return parseIntent(string(r.buf[:n]), r.table)
		}
		_ = f.Close() // its process is gone (ESRCH): the pid may be someone else's now
		delete(r.files, pid)
	}
	return intentUnknown
}

func (r *intentReader) threads(pid int) intent {
	tasks, err := os.ReadDir(filepath.Join(r.procRoot, strconv.Itoa(pid), "task"))
	if err != nil || len(tasks) <= 1 {
		return intentUnknown // single-threaded: the leader said it all
	}
	seen := intentUnknown
	for i, t := range tasks {
		if i >= 64 {
			break // bound the cost on a heavily threaded process
		}
		b, err := os.ReadFile(filepath.Join(r.procRoot, strconv.Itoa(pid), "task", t.Name(), "syscall"))
		if err != nil {
			continue
		}
		switch parseIntent(string(b), r.table) {
		case intentWrite:
			return intentWrite
		case intentRead:
			seen = intentRead
		}
	}
	return seen
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
