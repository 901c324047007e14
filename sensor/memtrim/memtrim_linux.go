package memtrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Trim advises the kernel to reclaim the pages of the running executable's
// read-only mappings (code and read-only data: MADV_PAGEOUT, which never
// loses data; a page needed again is faulted back in from the file) and
// returns the free heap to the operating system. The writable data mapping
// is left alone. Pages another process maps too are left by the kernel.
func Trim() (Stats, error) {
	var st Stats
	st.RSSBefore = vmRSS()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return st, fmt.Errorf("memtrim: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return st, fmt.Errorf("memtrim: %w", err)
	}
	var errs []error
	for _, m := range readOnlyMappings(maps, exe) {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_PAGEOUT); e != 0 {
			errs = append(errs, fmt.Errorf("memtrim: madvise %x-%x: %w", m.start, m.end, e))
			continue
		}
		st.Mapped += int64(m.end - m.start)
	}
	debug.FreeOSMemory()
	st.RSSAfter = vmRSS()
	return st, errors.Join(errs...)
}

type mapping struct{ start, end uintptr }

// readOnlyMappings returns the mappings of file exe in a /proc/PID/maps
// text that are neither writable nor shared.
func readOnlyMappings(maps []byte, exe string) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path (the path may hold spaces)
		f := strings.SplitN(sc.Text(), " ", 6)
		if len(f) < 6 || strings.TrimLeft(f[5], " ") != exe || len(f[1]) != 4 || f[1][1] != '-' || f[1][3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || b <= a {
			continue
		}
		out = append(out, mapping{uintptr(a), uintptr(b)})
	}
	return out
}

// vmRSS is VmRSS from /proc/self/status in bytes, or 0.
func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}
