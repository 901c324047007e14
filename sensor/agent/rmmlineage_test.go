package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/fileactivity"
	"github.com/tillwatch/tillwatch/sensor/fileguard"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// standInAgent copies /bin/sh to dir/agentmon: Kaseya's Linux agent name
// in the catalog.
func standInAgent(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "agentmon")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func builtinLineage(t *testing.T, approved ...string) *rmmLineage {
	t.Helper()
	cat, err := rmm.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	l, err := newRMMLineage(cat, approved, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRMMLineageFindsTheAgentAboveAGrandchild: the lookup walks real
// parents: a sleep started by a shell started by the stand-in agent is
// under kaseya-vsa; the test's own children are under nothing.
func TestRMMLineageFindsTheAgentAboveAGrandchild(t *testing.T) {
	agent := standInAgent(t, t.TempDir())
	cmd := exec.Command(agent, "-c", "sh -c 'sleep 30; true'; true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var sleepPID int
	deadline := time.Now().Add(5 * time.Second)
	for sleepPID == 0 && time.Now().Before(deadline) {
		out, _ := exec.Command("pgrep", "-f", "-n", "^sleep 30$").Output()
		fmt.Sscan(string(out), &sleepPID)
		time.Sleep(20 * time.Millisecond)
	}
	if sleepPID == 0 {
		t.Fatal("grandchild not found")
	}
	t.Cleanup(func() {
		if p, err := os.FindProcess(sleepPID); err == nil {
			p.Kill()
		}
	})
	l := builtinLineage(t, "kaseya-vsa")
	got := l.AgentOf(sleepPID)
	if got == nil || got.Product != "kaseya-vsa" || got.PID != cmd.Process.Pid || !got.Approved || got.Name != "agentmon" {
		t.Fatalf("AgentOf(grandchild) = %+v, want kaseya-vsa agent pid %d (approved)", got, cmd.Process.Pid)
	}
	plain := exec.Command("sleep", "30")
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Process.Kill(); plain.Wait() })
	if got := l.AgentOf(plain.Process.Pid); got != nil {
		t.Fatalf("a process outside any agent's tree is under %+v", got)
	}
}

// renamer renames every CSV in a folder to an unknown extension, in name
// order: 25 points per file in the built-in rules, so a tree is stopped at
// the fourth file, or at the second under an RMM agent (factor 0.5).
const renamer = `
import os, sys, time
d = sys.argv[1]
for n in sorted(os.listdir(d)):
    if n.endswith(".csv"):
        os.rename(os.path.join(d, n), os.path.join(d, n + ".kaseya"))
        time.sleep(0.05)
`

type verdicts struct {
	mu  sync.Mutex
	evs []event.Event
}

func (v *verdicts) emit(ev event.Event) {
	if ev.Event.Dataset != ransomware.DatasetVerdict {
		return
	}
	v.mu.Lock()
	v.evs = append(v.evs, ev)
	v.mu.Unlock()
}

// TestRMMDescendantIsStoppedSooner runs the same renamer twice on the real
// fanotify source and guard: on its own it is stopped at the fourth file;
// as the grandchild of a stand-in Kaseya agent, at the second, and the
// verdict names the agent.
func TestRMMDescendantIsStoppedSooner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify permission events need root")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	r, err := ransomware.LoadRules(rules.Builtin, "ransomware")
	if err != nil {
		t.Fatal(err)
	}
	agent := standInAgent(t, t.TempDir())
	script := filepath.Join(t.TempDir(), "renamer.py")
	if err := os.WriteFile(script, []byte(renamer), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                   string
		underAgent             bool
		minRenamed, maxRenamed int // the stop lands at the threshold; one more may be in flight
		wantProduct            string
	}{
		{"on its own", false, 4, 5, ""},
		{"under the RMM agent", true, 2, 3, "kaseya-vsa"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i := range 12 {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("sales-%02d.csv", i)), []byte("2024-01-01,till 1,12.50\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := &verdicts{}
			g := fileguard.New(fileguard.Options{Rules: r, Enforce: true, Self: os.Getpid(), Emit: out.emit,
				Log: slog.New(slog.DiscardHandler), RMM: builtinLineage(t)})
			src, err := fileactivity.New(fileactivity.Config{Backend: fileactivity.BackendFanotify, Paths: []string{dir}, Self: os.Getpid()},
				g, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = src.Run(ctx, func(event.Event) {}); close(done) }()
			defer func() { cancel(); <-done }()
			time.Sleep(300 * time.Millisecond) // marks in place

			cmd := exec.Command(py, script, dir)
			if tc.underAgent {
				// "; true" keeps the shell from exec-ing python in its place:
				// python runs as the agent's child.
				cmd = exec.Command(agent, "-c", py+" "+script+" "+dir+"; true")
			}
			_ = cmd.Run()
			entries, _ := os.ReadDir(dir)
			renamed := 0
			for _, e := range entries {
				if strings.HasSuffix(e.Name(), ".kaseya") {
					renamed++
				}
			}
			if renamed < tc.minRenamed || renamed > tc.maxRenamed {
				t.Fatalf("%d files renamed, want %d..%d", renamed, tc.minRenamed, tc.maxRenamed)
			}
			// The verdict is emitted right after the stop, which can be a
			// moment after the killed process has been reaped here.
			deadline := time.Now().Add(3 * time.Second)
			for {
				out.mu.Lock()
				n := len(out.evs)
				out.mu.Unlock()
				if n > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no verdict")
				}
				time.Sleep(10 * time.Millisecond)
			}
			out.mu.Lock()
			defer out.mu.Unlock()
			v := out.evs[0]
			got := ""
			if v.Tillwatch.RMM != nil {
				got = v.Tillwatch.RMM.Product
			}
			if got != tc.wantProduct {
				t.Fatalf("verdict names RMM product %q, want %q", got, tc.wantProduct)
			}
		})
	}
}
