package fileguard

import (
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

// writeIntent reads what the opener is doing from /proc/PID/task/*/syscall.
// While fanotify holds the opener in its permission request, the blocked
// thread's syscall number and arguments are stable there; fanotify itself
// does not say whether the open is for reading or writing. Any thread in an
// open-for-write counts (fanotify reports the process, not the thread).
func writeIntent(procRoot string, pid int) intent {
	table := openSyscalls[runtime.GOARCH]
	if pid <= 0 || table == nil {
		return intentUnknown
	}
	tasks, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(pid), "task"))
	if err != nil {
		return intentUnknown
	}
	seen := intentUnknown
	for i, t := range tasks {
		if i >= 64 {
			break // bound the cost on a heavily threaded process
		}
		b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "task", t.Name(), "syscall"))
		if err != nil {
			continue
		}
		switch parseIntent(string(b), table) {
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
