package kernel

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// connectUnder runs, under a stand-in agent marked tainted when tainted
// is set, a child that connects to the unix socket at path; asAgent makes
// the agent itself connect instead of a child it starts.
func connectUnder(t *testing.T, l *Layer, path string, tainted, asAgent bool) {
	t.Helper()
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl makes the connect")
	}
	conn := fmt.Sprintf(`use Socket; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_un("%s")) or die "connect: $!"`, path)
	script := `read go; perl -e "$0"`
	if asAgent {
		script = `read go; exec perl -e "$0"`
	}
	agent := exec.Command("/bin/sh", "-c", script, conn)
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	if tainted {
		if err := l.TaintAgent(agent.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	waitBounded(t, agent, 20*time.Second)
	if !agent.ProcessState.Success() {
		t.Fatalf("the connect failed: %v", agent.ProcessState)
	}
}

// TestBusTouch: a process under an agent connecting to a bus socket is
// recorded, with its family; the agent itself, an untainted process and
// another socket are not.
func TestBusTouch(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true})
	dir := t.TempDir()
	bus, other := filepath.Join(dir, "bus"), filepath.Join(dir, "other")
	for _, p := range []string{bus, other} {
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	if err := l.AddBusSockets(bus); err != nil {
		t.Fatal(err)
	}
	connectUnder(t, l, bus, false, false)
	connectUnder(t, l, other, true, false)
	connectUnder(t, l, bus, true, true)
	if bt, _, ok := l.LastBusTouch(); ok {
		t.Fatalf("recorded %+v: an untainted process, another socket and the agent itself do not count", bt)
	}
	connectUnder(t, l, bus, true, false)
	bt, ago, ok := l.LastBusTouch()
	if !ok || bt.Family == 0 || bt.PID == 0 || ago > 10*time.Second {
		t.Fatalf("after a child of the agent connected: %+v, %s ago, %v", bt, ago, ok)
	}
}

// TestDecoyTaintedOnly: with the sensor stopped at the asking of a process
// under an agent (TaintedOnly), a decoy written by the operator's shell is
// not stopped; one written by a process under an agent still is.
func TestDecoyTaintedOnly(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true, Decoys: true, TaintedOnly: true})
	dir := t.TempDir()
	decoy := "0000 Accounts " + unique(t) + ".pdf"
	if err := os.WriteFile(filepath.Join(dir, decoy), []byte("plain\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.AddDecoys(decoy); err != nil {
		t.Fatal(err)
	}
	op := exec.Command("/bin/sh", "-c", `echo x > ./"$1"`, "sh", decoy)
	op.Dir = dir
	if out, err := op.CombinedOutput(); err != nil {
		t.Fatalf("the operator's write of a decoy: %v %s", err, out)
	}
	agent := exec.Command("/bin/sh", "-c", `read go; sh -c 'echo encrypted > ./"$0"' "$0"`, decoy)
	agent.Dir = dir
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	if err := l.TaintAgent(agent.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	var pid int
	waitFor(t, 10*time.Second, "the agent's child to be stopped", func() bool {
		st, _ := l.Stopped()
		for _, s := range st {
			if s.Reason == ReasonDecoyOpen {
				pid = s.PID
			}
		}
		return pid != 0
	})
	// The shell's ">" truncates in the open, before the stop lands; the
	// write after it never comes.
	if b, _ := os.ReadFile(filepath.Join(dir, decoy)); string(b) == "encrypted\n" {
		t.Errorf("decoy holds %q: the agent's child wrote it before the stop", b)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}
