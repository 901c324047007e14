package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestHostileMembersListsSurvivors: a member of a family that attacked the
// sensor and makes no syscall the tripwires look at (here asleep; in the
// field, left stopped by a tree kill the dying sensor did not finish) is
// not killed by the kernel; HostileMembers lists it for the restarted
// sensor to judge, and lists nothing of an honest family.
func TestHostileMembersListsSurvivors(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true})
	s := newScene(t, l)
	pidFile := filepath.Join(s.dir, "sleeper.pid")
	// The shell waits until the sleeper sleeps (past the opens of its
	// start) before the kill, so the kernel has no syscall of its at
	// which to kill it.
	s.runAgent(fmt.Sprintf("sleep 300 &\necho $! > %s\nc=; while [ \"$c\" != hrtimer_nanosleep ]; do read -r c < /proc/$!/wchan; done\nkill -9 %d\n%s",
		pidFile, s.sensor.Process.Pid, s.encryptLoop()), true)
	s.waitTamper(ReasonSignal)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	sleeper, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(sleeper, syscall.SIGKILL) })
	if zombie(sleeper) {
		t.Fatalf("the sleeper %d died; the test needs a survivor", sleeper)
	}
	got, err := l.HostileMembers()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, sleeper) {
		t.Errorf("HostileMembers %v lacks the sleeping member %d of the family that signalled the sensor", got, sleeper)
	}

	honest := newScene(t, l)
	honestPID := filepath.Join(honest.dir, "sleeper.pid")
	honest.runAgent(fmt.Sprintf("sleep 300 &\necho $! > %s", honestPID), true)
	b, err = os.ReadFile(honestPID)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { syscall.Kill(other, syscall.SIGKILL) })
	if got, _ := l.HostileMembers(); slices.Contains(got, other) {
		t.Errorf("HostileMembers %v lists %d of a family that did nothing", got, other)
	}
}
