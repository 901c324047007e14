package agent

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	s, l, watch := armedSensor(t)
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
	if s.standDownKernel(false) {
		t.Error("a stop with no process under an agent near the service manager taken for an attack")
	}
	if ids, err := l.GuardedRootIDs(); err != nil || len(ids) != 0 {
		t.Errorf("identities after the stand-down %+v (%v), want none", ids, err)
	}
}

// TestStopAfterAgentTalkedToServiceManager: a stop asked for right after a
// process under an RMM agent connected to the service manager's socket
// (here a socket of the test's, named as one) is not a clean stop: the
// tripwires stay armed and the stop is reported as unclean.
func TestStopAfterAgentTalkedToServiceManager(t *testing.T) {
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl makes the connect")
	}
	s, l, _ := armedSensor(t)
	bus := filepath.Join(t.TempDir(), "bus")
	ln, err := net.Listen("unix", bus)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := l.AddBusSockets(bus); err != nil {
		t.Fatal(err)
	}
	// A stand-in agent (marked in the kernel) whose child connects.
	agent := exec.Command("/bin/sh", "-c", `read go; perl -e "$0"`,
		fmt.Sprintf(`use Socket; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_un("%s")) or die "connect: $!"`, bus))
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := l.TaintAgent(agent.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	if err := agent.Wait(); err != nil {
		t.Fatalf("the connect failed: %v", err)
	}
	// The sensor's own restart into new rules is never taken for one.
	if s.standDownKernel(true) {
		t.Fatal("the sensor's own restart taken for a stop asked for by a process under an agent")
	}
	if err := s.kern.SetConfig(s.kernCfg); err != nil { // armed again, as the restart's next run does
		t.Fatal(err)
	}
	if !s.standDownKernel(false) {
		t.Fatal("a stop right after a process under an agent talked to the service manager taken for a clean one")
	}
	if ids, err := l.GuardedRootIDs(); err != nil || len(ids) != 2 {
		t.Errorf("identities after the refused stand-down %+v (%v), want both roots still guarded", ids, err)
	}
}

// armedSensor is a sensor's kernel side with the file tripwires armed on
// two watched folders.
func armedSensor(t *testing.T) (*Sensor, *kernel.Layer, []string) {
	t.Helper()
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
	return s, l, watch
}
