package procclock

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBootTimeFromFixtureUsesBtime(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := BootTime(root)
	if err != nil {
		t.Fatal(err)
	}
	// Far from this host's boot, so btime is used as it is.
	if !got.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("BootTime = %v", got)
	}
	if _, err := BootTime(t.TempDir()); err == nil {
		t.Fatal("BootTime without a stat file succeeded")
	}
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("btime soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := BootTime(root); err == nil {
		t.Fatal("malformed btime accepted")
	}
}

// TestStartOfARealProcess: a process started now has a start time within
// a tick or two of now, not up to a second early as with btime alone (the
// error that made pid-reuse checks refuse to kill on some boots).
func TestStartOfARealProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procfs is Linux")
	}
	boot, err := BootTime("/proc")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	cmd := exec.Command("sleep", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	got := Start(boot, ticks)
	if d := got.Sub(before); d < -50*time.Millisecond || d > time.Second {
		t.Fatalf("start %s is %s from the launch at %s", got.Format(time.RFC3339Nano), d, before.Format(time.RFC3339Nano))
	}
}
