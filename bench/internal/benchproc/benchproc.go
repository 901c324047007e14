//go:build linux

// Package benchproc is what the benchmark programs (internal/*bench) share
// to measure real processes: resident memory and CPU time read from /proc,
// a sampler over a window, the machine's description for the report, the
// Prometheus text the sensor serves, and the file-descriptor limit.
//
// CPU time is utime+stime of /proc/PID/stat in clock ticks of USER_HZ,
// which is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)
// reports that constant; the kernel converts to it).
package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
const ClockTicks = 100

// Sample is one reading of a process.
type Sample struct {
	At       time.Time
	RSS      int64  // VmRSS, bytes
	RSSAnon  int64  // RssAnon, bytes (heap, stacks: what the process itself allocated)
	CPUTicks uint64 // utime+stime, in ClockTicks
	Threads  int
}

// Read takes one sample of pid from the proc file system at root ("/proc").
func Read(root string, pid int) (Sample, error) {
	s := Sample{At: time.Now()}
	dir := filepath.Join(root, strconv.Itoa(pid))
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSS, err = kB(v)
		case "RssAnon":
			s.RSSAnon, err = kB(v)
		case "Threads":
			s.Threads, err = strconv.Atoi(strings.TrimSpace(v))
		}
		if err != nil {
			return s, fmt.Errorf("%s/status %s: %w", dir, k, err)
		}
	}
	if s.RSS == 0 {
		return s, fmt.Errorf("%s/status: no VmRSS (a zombie or a kernel thread?)", dir)
	}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return s, err
	}
	s.CPUTicks, err = cpuTicks(stat)
	if err != nil {
		return s, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return s, nil
}

// kB parses a "  1234 kB" value of /proc/PID/status into bytes.
func kB(v string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n * 1024, err
}

// cpuTicks is utime+stime (fields 14 and 15) of a /proc/PID/stat line. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func cpuTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	return u + st, err
}

// Watch samples pid every interval until ctx is done or the process is
// gone, and returns the samples (the first taken at once).
func Watch(ctx context.Context, root string, pid int, interval time.Duration) []Sample {
	var out []Sample
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s, err := Read(root, pid)
		if err != nil {
			return out
		}
		out = append(out, s)
		select {
		case <-ctx.Done():
			// One last reading, so the window ends when it was asked to.
			if s, err := Read(root, pid); err == nil {
				out = append(out, s)
			}
			return out
		case <-t.C:
		}
	}
}

// Summary describes a process over a window of samples.
type Summary struct {
	Samples    int
	Window     time.Duration // first to last sample
	MedianRSS  int64
	MaxRSS     int64
	MedianAnon int64
	CPUSeconds float64 // CPU time used over the window
	CPUPercent float64 // of one core, averaged over the window
	MaxThreads int
}

// Summarize reduces samples (in time order) to their summary.
func Summarize(ss []Sample) Summary {
	if len(ss) == 0 {
		return Summary{}
	}
	var rss, anon []int64
	sum := Summary{Samples: len(ss)}
	for _, s := range ss {
		rss = append(rss, s.RSS)
		anon = append(anon, s.RSSAnon)
		sum.MaxThreads = max(sum.MaxThreads, s.Threads)
	}
	sum.MedianRSS, sum.MaxRSS, sum.MedianAnon = Median(rss), slices.Max(rss), Median(anon)
	first, last := ss[0], ss[len(ss)-1]
	sum.Window = last.At.Sub(first.At)
	sum.CPUSeconds = float64(last.CPUTicks-first.CPUTicks) / ClockTicks
	if sum.Window > 0 {
		sum.CPUPercent = 100 * sum.CPUSeconds / sum.Window.Seconds()
	}
	return sum
}

// Number is what Median takes.
type Number interface {
	~int | ~int64 | ~uint64 | ~float64
}

// Median of xs (the mean of the middle two for an even count); 0 if empty.
func Median[T Number](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MiB formats bytes as mebibytes with one decimal.
func MiB(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }

// HostForks is the number of processes created on the machine since boot
// (the "processes" line of root/stat): the difference over a window says
// how busy the rest of the machine was.
func HostForks(root string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, "stat"))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "processes "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no processes line in " + filepath.Join(root, "stat"))
}

// LoadAvg is the first three fields of root/loadavg ("?" if unreadable).
func LoadAvg(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "loadavg"))
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Machine describes this machine for a report: CPUs and their model,
// memory, OS, kernel and Go version.
func Machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			if n, err := kB(strings.TrimPrefix(l, "MemTotal:")); err == nil {
				mem = fmt.Sprintf(", %.0f GiB RAM", float64(n)/(1<<30))
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	cpus := fmt.Sprintf("%d CPUs", runtime.NumCPU())
	if model != "" {
		cpus += " (" + model + ")"
	}
	return fmt.Sprintf("%s%s, %s/%s, Linux %s, %s", cpus, mem, runtime.GOOS, runtime.GOARCH, kernel, runtime.Version())
}

// RaiseNoFile raises this process's RLIMIT_NOFILE (inherited by children
// started afterwards) towards want: the soft limit up to the hard one, and
// the hard one too when the kernel allows (CAP_SYS_RESOURCE, up to
// fs.nr_open). It returns the soft limit now in force and, when that is
// below want, why (got is 0 only if the limit could not be read).
func RaiseNoFile(want uint64) (got uint64, why error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	if l.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up)
		if err == nil {
			return want, nil
		}
		why = fmt.Errorf("setrlimit(RLIMIT_NOFILE) to %d refused: %w; the hard limit stays %d", want, err, l.Max)
	}
	l.Cur = min(want, l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, why
}

// OpenFDs counts the open file descriptors of pid.
func OpenFDs(root string, pid int) int {
	es, err := os.ReadDir(filepath.Join(root, strconv.Itoa(pid), "fd"))
	if err != nil {
		return -1
	}
	return len(es)
}

// FanotifyReady reports whether pid (a sensor) has at least two fanotify
// groups and each covers dirs watched folders: a group with a filesystem
// mark covers them all (the sensor's name group, where the kernel allows);
// else it needs an inode mark per folder (the content group always marks
// each folder).
func FanotifyReady(root string, pid, dirs int) bool {
	groups := 0
	for _, g := range fanotifyGroups(root, pid) {
		if g.filesystems == 0 && g.inodes < dirs {
			return false
		}
		groups++
	}
	return groups >= 2
}

// FanotifyMarks describes each fanotify group of pid ("12 inode", "1
// filesystem + 11 inode"), for error messages.
func FanotifyMarks(root string, pid int) []string {
	var out []string
	for _, g := range fanotifyGroups(root, pid) {
		d := fmt.Sprintf("%d inode", g.inodes)
		if g.filesystems > 0 {
			d = fmt.Sprintf("%d filesystem + %s", g.filesystems, d)
		}
		out = append(out, d)
	}
	return out
}

type fanotifyGroup struct{ inodes, filesystems int }

// fanotifyGroups reads the marks of each fanotify descriptor of pid from
// /proc/PID/fdinfo: "fanotify ino:" lines are inode marks, "fanotify
// sdev:" lines filesystem marks.
func fanotifyGroups(root string, pid int) []fanotifyGroup {
	fds, _ := filepath.Glob(filepath.Join(root, strconv.Itoa(pid), "fdinfo", "*"))
	var out []fanotifyGroup
	for _, f := range fds {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("fanotify flags:")) {
			continue
		}
		out = append(out, fanotifyGroup{inodes: bytes.Count(b, []byte("fanotify ino:")), filesystems: bytes.Count(b, []byte("fanotify sdev:"))})
	}
	return out
}

// FreeAddr is a loopback address with a port free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitFor polls f every 20ms until it holds or d has passed.
func WaitFor(d time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Commas writes n with thousands separators (1,000,000).
func Commas[T ~int | ~int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

// LogField is the value of key (key=value) on the first line of log that
// holds msg, or "?".
func LogField(log, msg, key string) string {
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, msg) {
			continue
		}
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
	}
	return "?"
}
