package agent

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/fileguard"
	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// TestKernelGuardedRootsArmedAndStoodDown: arming the kernel's file
// tripwires records the watched folders' identities, by which the kernel
// places relative paths; the clean stop's stand-down removes them with the
// burst tripwire.
func TestKernelGuardedRootsArmedAndStoodDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	watch := []string{t.TempDir(), t.TempDir()}
	b := make([]byte, 6)
	rand.Read(b)
	pin := "/sys/fs/bpf/tillwatch-test-" + hex.EncodeToString(b)
	t.Cleanup(func() { kernel.Release(pin) })
	kcfg := kernel.Config{PinDir: pin, Enforce: true}
	l, err := kernel.Load(kcfg)
	if err != nil {
		t.Fatalf("kernel layer: %v", err)
	}
	t.Cleanup(func() { l.Unpin() })
	rules, err := loadRansomwareRules(nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	guard := fileguard.New(fileguard.Options{Rules: rules, Enforce: true, ProcRoot: "/proc", Self: os.Getpid(), Log: log})
	cfg := config.Default()
	cfg.Mode = "enforce"
	cfg.Process.ProcRoot = "/proc"
	s := &Sensor{cfg: cfg, log: log, kern: l, kernCfg: kcfg, guard: guard}
	if _, why := s.armKernelFiles(cfg, watch); !s.kernCfg.Burst {
		t.Fatalf("burst tripwire not armed: %s", why)
	}
	ids, err := l.GuardedRootIDs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[kernel.RootID]bool{}
	for _, w := range watch {
		id, err := kernel.DirID(w)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = true
	}
	if len(ids) != len(want) || !want[ids[0]] || !want[ids[1]] {
		t.Fatalf("guarded roots' identities %+v, want the watched folders' %+v", ids, want)
	}
	s.standDownKernel()
	if ids, err := l.GuardedRootIDs(); err != nil || len(ids) != 0 {
		t.Errorf("identities after the stand-down %+v (%v), want none", ids, err)
	}
}
