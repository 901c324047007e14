package spool

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/shipper"
)

type healthLog struct {
	mu      sync.Mutex
	reasons []string
}

func (h *healthLog) report(_, state, reason string) {
	h.mu.Lock()
	h.reasons = append(h.reasons, state+": "+reason)
	h.mu.Unlock()
}

func (h *healthLog) has(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reasons {
		if strings.Contains(r, sub) {
			return true
		}
	}
	return false
}

func open(t *testing.T, o Options) *Spool {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func add(t *testing.T, s *Spool, kind string, n int) []int64 {
	t.Helper()
	var seqs []int64
	for range n {
		seq, err := s.Append(kind, func(seq int64) ([]byte, error) { return []byte(fmt.Sprintf(`{"seq":%d,"kind":%q}`, seq, kind)), nil })
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// drain peeks and acks everything, returning the sequence of each line.
func drain(t *testing.T, s *Spool, batch int) []int64 {
	t.Helper()
	var got []int64
	for {
		b, err := s.Peek(batch, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Lines) == 0 {
			return got
		}
		for _, l := range b.Lines {
			var m struct{ Seq int64 }
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			got = append(got, m.Seq)
		}
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundTripAcrossReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, SegmentBytes: 300})
	seqs := add(t, s, event.KindAlert, 20)
	for i, q := range seqs {
		if q != int64(i+1) {
			t.Fatalf("sequence %d at %d", q, i)
		}
	}
	b, _ := s.Peek(5, 1<<20)
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	unacked, _ := s.Peek(3, 1<<20) // in flight, never acknowledged
	_ = unacked
	s.Close()

	s2 := open(t, Options{Dir: dir, SegmentBytes: 300})
	if s2.Len() != 15 {
		t.Fatalf("after reopen Len = %d, want 15 unacknowledged", s2.Len())
	}
	more := add(t, s2, event.KindAlert, 2)
	if more[0] != 21 {
		t.Errorf("sequence after reopen = %d, want 21 (never reused)", more[0])
	}
	got := drain(t, s2, 4)
	if len(got) != 17 || got[0] != 6 || got[16] != 22 {
		t.Errorf("redelivered %v, want 6..22", got)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Errorf("%d segments left after everything was acknowledged, want only the write segment", len(segs))
	}
}

func TestAckMustMatchTheBatchInFlight(t *testing.T) {
	t.Parallel()
	s := open(t, Options{Dir: t.TempDir()})
	add(t, s, event.KindAlert, 3)
	b, _ := s.Peek(2, 1<<20)
	if err := s.Ack(shipper.Batch{Lines: b.Lines, Token: b.Token + 1}); err == nil {
		t.Error("ack with a foreign token accepted")
	}
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b); err == nil {
		t.Error("double ack accepted")
	}
}

func TestTornTailIsCutAndReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	add(t, s, event.KindAlert, 10)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	fi, _ := os.Stat(segs[0])
	if err := os.Truncate(segs[0], fi.Size()-3); err != nil { // the last write, cut short
		t.Fatal(err)
	}
	var h healthLog
	s2 := open(t, Options{Dir: dir, Health: h.report})
	if s2.Len() != 9 || !h.has("torn tail") {
		t.Fatalf("Len %d, health %v", s2.Len(), h.reasons)
	}
	add(t, s2, event.KindAlert, 1) // appends after the cut are readable
	if got := drain(t, s2, 100); len(got) != 10 || got[8] != 9 {
		t.Errorf("records after recovery %v", got)
	}
}

func TestCorruptMiddleSkipsOnlyThatSegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, SegmentBytes: 200})
	add(t, s, event.KindAlert, 12)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	raw, _ := os.ReadFile(segs[0])
	raw[len(raw)-5] ^= 0xff // flip a payload byte of the first segment's last record
	if err := os.WriteFile(segs[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var h healthLog
	s2 := open(t, Options{Dir: dir, SegmentBytes: 200, Health: h.report})
	got := drain(t, s2, 100)
	if len(got) != 11 || !h.has("corrupt records") {
		t.Errorf("kept %v (want 11 of 12), health %v", got, h.reasons)
	}
}

func TestBoundDropsTelemetryBeforeAlerts(t *testing.T) {
	t.Parallel()
	var h healthLog
	s := open(t, Options{Dir: t.TempDir(), MaxBytes: 1000, AlertReserve: 500, Health: h.report})
	n := 0
	for {
		_, err := s.Append(event.KindEvent, func(seq int64) ([]byte, error) { return []byte(`{"telemetry":"xxxxxxxxxxxxxxxxxxxx"}`), nil })
		if errors.Is(err, shipper.ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no telemetry fit")
	}
	// Alerts still fit into the reserve.
	if _, err := s.Append(event.KindAlert, func(int64) ([]byte, error) { return []byte(`{"alert":1}`), nil }); err != nil {
		t.Fatalf("alert refused while only telemetry filled the bound: %v", err)
	}
	for {
		if _, err := s.Append(event.KindAlert, func(int64) ([]byte, error) { return []byte(`{"alert":"yyyyyyyyyyyyyyyyyyyy"}`), nil }); err != nil {
			break
		}
	}
	d := s.Dropped()
	if d[event.KindEvent] != 1 || d[event.KindAlert] != 1 {
		t.Errorf("dropped %v", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !h.has("spool full") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !h.has("spool full") {
		t.Error("no health event for the full spool")
	}
}

// TestDiskFullKeepsAlertsInMemory fills a real (tiny) tmpfs.
func TestDiskFullKeepsAlertsInMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; CI runs as root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
	var h healthLog
	s, err := Open(Options{Dir: dir, Health: h.report, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := strings.Repeat("z", 1000)
	const total = 200 // ~200 KB: more than the disk holds
	for i := range total {
		if _, err := s.Append(event.KindAlert, func(seq int64) ([]byte, error) {
			return []byte(fmt.Sprintf(`{"seq":%d,"p":%q}`, seq, payload)), nil
		}); err != nil {
			t.Fatalf("alert %d refused: %v", i, err)
		}
	}
	if len(s.mem) == 0 {
		t.Fatal("the disk never filled; the test proves nothing")
	}
	got := drain(t, s, 50)
	if len(got) != total {
		t.Fatalf("delivered %d of %d alerts", len(got), total)
	}
	for i, q := range got {
		if q != int64(i+1) {
			t.Fatalf("order broken at %d: %d", i, q)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !h.has("held in memory") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !h.has("held in memory") {
		t.Errorf("no health event for the full disk: %v", h.reasons)
	}
}

// TestSIGKILLLosesNothingAcknowledged runs a real appender process, kills it
// with SIGKILL at random points five times, and checks that every append
// it reported as returned is in the spool exactly once, in order.
func TestSIGKILLLosesNothingAcknowledged(t *testing.T) {
	if os.Getenv("TILLWATCH_SPOOL_CHILD") != "" {
		t.Skip("child mode")
	}
	dir := t.TempDir()
	var returned []int64
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolChild$")
		cmd.Env = append(os.Environ(), "TILLWATCH_SPOOL_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			if q, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "appended "), 10, 64); err == nil && strings.HasPrefix(sc.Text(), "appended ") {
				returned = append(returned, q)
				lines++
				if lines == 40+round*13 {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					break
				}
			}
		}
		_ = cmd.Wait()
	}
	s := open(t, Options{Dir: dir})
	got := drain(t, s, 1000)
	seen := map[int64]int{}
	for i, q := range got {
		seen[q]++
		if i > 0 && q <= got[i-1] {
			t.Fatalf("sequence not increasing at %d: %d after %d", i, q, got[i-1])
		}
	}
	for _, q := range returned {
		if seen[q] != 1 {
			t.Errorf("sequence %d was appended but is present %d times", q, seen[q])
		}
	}
	if len(returned) < 200 {
		t.Errorf("only %d appends observed", len(returned))
	}
}

// TestSpoolChild is the appender process of the crash test.
func TestSpoolChild(t *testing.T) {
	dir := os.Getenv("TILLWATCH_SPOOL_CHILD")
	if dir == "" {
		t.Skip("only run as the crash test's child")
	}
	s, err := Open(Options{Dir: dir, SegmentBytes: 4096})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for {
		seq, err := s.Append(event.KindAlert, func(seq int64) ([]byte, error) { return []byte(fmt.Sprintf(`{"seq":%d}`, seq)), nil })
		if err != nil {
			fmt.Println("append:", err)
			os.Exit(1)
		}
		fmt.Printf("appended %d\n", seq)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encodeRecord(event.KindAlert, 7, []byte(`{"a":1}`)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		off := int64(0)
		for {
			_, _, payload, next, ok := decode(raw, off)
			if !ok {
				break
			}
			if next <= off || next > int64(len(raw)) || len(payload) > maxRecord {
				t.Fatalf("decode advanced from %d to %d over %d bytes", off, next, len(raw))
			}
			off = next
		}
	})
}

// TestTelemetrySyncedWithoutFurtherWrites: telemetry left unsynced by a
// write is synced SyncEvery later although nothing else is written, every
// time it is left so.
func TestTelemetrySyncedWithoutFurtherWrites(t *testing.T) {
	t.Parallel()
	s := open(t, Options{Dir: t.TempDir(), SyncEvery: 300 * time.Millisecond})
	synced := func() bool { s.mu.Lock(); defer s.mu.Unlock(); return !s.unsynced }
	left := 0
	for round := range 3 {
		// The first write after a sync is synced at once; the next
		// ones within SyncEvery are left to the sync loop.
		add(t, s, event.KindEvent, 3)
		if !synced() {
			left++
		}
		deadline := time.Now().Add(10 * time.Second)
		for !synced() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: telemetry still unsynced after 10s", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if left == 0 {
		t.Fatal("no write was left unsynced for the sync loop (three writes took longer than SyncEvery each round)")
	}
}
