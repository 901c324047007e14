package memtrim

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappings(t *testing.T) {
	t.Parallel()
	const exe = "/opt/till watch/tillwatch-sensor"
	maps := `00400000-00405000 r--p 00000000 fe:00 10215877                           /opt/till watch/tillwatch-sensor
00405000-00e4d000 r-xp 00005000 fe:00 10215877                           /opt/till watch/tillwatch-sensor
017d8000-018a0000 rw-p 013d7000 fe:00 10215877                           /opt/till watch/tillwatch-sensor
018a0000-018b0000 r--s 00000000 fe:00 10215877                           /opt/till watch/tillwatch-sensor
7efe10a40000-7efe11a41000 r--s 00000000 00:10 1234                       anon_inode:bpf-map
7efe71df7000-7efe71f4d000 r-xp 00028000 fe:00 555                        /usr/lib/x86_64-linux-gnu/libc.so.6
7efe71f4d000-7efe71f60000 r-xp 00028000 fe:00 555                        /opt/till watch/tillwatch-sensor.old
garbage line
`
	got := readOnlyMappings([]byte(maps), exe)
	want := []mapping{{0x400000, 0x405000}, {0x405000, 0xe4d000}}
	if len(got) != len(want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: %x, want %x", i, got[i], want[i])
		}
	}
}

// TestTrimReleasesExecutablePages: the test binary's own code and
// read-only data, touched by its start-up, are no longer resident after
// Trim, and the process goes on running the code (it is faulted back in).
func TestTrimReleasesExecutablePages(t *testing.T) {
	before := exeRSS(t)
	if before == 0 {
		t.Fatal("no resident page of the executable before the trim")
	}
	st, err := Trim()
	if err != nil {
		t.Fatalf("Trim: %v", err)
	}
	after := exeRSS(t)
	t.Logf("executable resident %d KiB -> %d KiB; VmRSS %d KiB -> %d KiB; %d KiB advised",
		before>>10, after>>10, st.RSSBefore>>10, st.RSSAfter>>10, st.Mapped>>10)
	if st.Mapped == 0 || st.RSSBefore == 0 || st.RSSAfter == 0 {
		t.Errorf("stats %+v", st)
	}
	if after >= before/2 {
		t.Errorf("executable resident %d bytes after the trim, %d before: want less than half", after, before)
	}
}

// exeRSS sums the Rss of the test binary's read-only mappings.
func exeRSS(t *testing.T) int64 {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	in := false
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && strings.HasSuffix(strings.TrimSpace(l), exe) && f[1][1] == '-'
			continue
		}
		if in && len(f) >= 2 && f[0] == "Rss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n << 10
		}
	}
	return sum
}
