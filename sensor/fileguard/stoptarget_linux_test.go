package fileguard

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
)

// TestStopTargetIsTheEncryptorsRoot: a kernel tripwire stops one worker of
// an encryptor; the tree to end is the one the guard groups it in, the
// highest ancestor running the same executable (here an outer sh above an
// inner sh), while a worker of another executable below it, with no
// suspicious siblings, is ended alone. Real processes.
func TestStopTargetIsTheEncryptorsRoot(t *testing.T) {
	t.Parallel()
	r, err := ransomware.LoadRules(rules.Builtin, "ransomware")
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Rules: r, Self: os.Getpid(), ProcRoot: "/proc", Log: slog.New(slog.DiscardHandler)})
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	// outer sh -> inner sh -> sleep; the inner shell writes its pid and
	// the sleep's, then waits.
	cmd := exec.Command("/bin/sh", "-c", `/bin/sh -c 'sleep 60 & echo "$$ $!" > "$0.tmp"; mv "$0.tmp" "$0"; wait' "$0"; :`, pids)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The whole group: outer sh, inner sh, sleep.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var inner, sleep int
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(pids)
		if err == nil {
			f := strings.Fields(string(b))
			inner, _ = strconv.Atoi(f[0])
			sleep, _ = strconv.Atoi(f[1])
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the inner shell never wrote its pid")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { _ = exec.Command("kill", "-9", strconv.Itoa(inner), strconv.Itoa(sleep)).Run() })
	if got := g.StopTarget(inner); got != cmd.Process.Pid {
		t.Errorf("StopTarget(inner sh %d) = %d, want the outer sh %d (same executable)", inner, got, cmd.Process.Pid)
	}
	if got := g.StopTarget(sleep); got != sleep {
		t.Errorf("StopTarget(sleep %d) = %d, want itself (another executable, no family)", sleep, got)
	}
}
