package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/tillwatch/tillwatch/sensor/canary"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/fileactivity"
	"github.com/tillwatch/tillwatch/sensor/fileguard"
	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// TestBenignWorkloadsUnderKernelGuard wires what the sensor wires for a
// watched folder with the kernel layer armed in enforce mode (decoy and
// burst tripwires, files.open_permission unless-kernel: no permission event
// per open) and runs honest bulk work in the folder: a tar extract, a
// compressor over the tree, cp -r (which copies the decoys' names too) and
// git init/add/commit. None may be killed; brief kernel stops that the
// sensor judged honest and resumed are counted and logged. The burst
// tripwire counts relative paths host-wide, as in the sensor: another
// process stopped during the test is judged (score 0) and resumed the same
// way.
func TestBenignWorkloadsUnderKernelGuard(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer and fanotify need root")
	}
	for _, tool := range []string{"tar", "gzip", "cp", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	// Folders first: their removal at the end must come after the layer's.
	watch, state, src := t.TempDir(), t.TempDir(), t.TempDir()
	b := make([]byte, 6)
	rand.Read(b)
	pin := "/sys/fs/bpf/tillwatch-test-" + hex.EncodeToString(b)
	t.Cleanup(func() { kernel.Release(pin) })
	kcfg := kernel.Config{PinDir: pin, Enforce: true}
	l, err := kernel.Load(kcfg)
	if err != nil {
		t.Fatalf("kernel layer: %v", err)
	}
	t.Cleanup(func() {
		// Let go anything still stopped (the test ended before judging it).
		if st, err := l.Stopped(); err == nil {
			for _, s := range st {
				l.Resume(s, 0)
			}
		}
		l.Unpin()
	})

	// Not protected like the sensor: its children (the workloads) would
	// inherit the protection. Its folders are removed after the layer.
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	set, err := canary.Plant(state, []string{watch})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := loadRansomwareRules(nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var verdicts []event.Event
	guard := fileguard.New(fileguard.Options{Rules: rules, Enforce: true, ProcRoot: "/proc", Self: os.Getpid(), Canaries: set, Log: log,
		Emit: func(ev event.Event) { mu.Lock(); verdicts = append(verdicts, ev); mu.Unlock() }})
	guard.SetNoOpenPerm(true) // as the sensor does with the source below
	cfg := config.Default()
	cfg.Mode = "enforce"
	cfg.Process.ProcRoot = "/proc"
	cfg.Files.OpenPermission = config.OpenPermissionUnlessKernel
	s := &Sensor{cfg: cfg, log: log, kern: l, kernCfg: kcfg, canaries: set, guard: guard}
	armed, why := s.armKernelFiles(cfg, []string{watch})
	if !armed {
		t.Fatalf("kernel tripwires not armed: %s", why)
	}
	// The sensor counts relative paths wherever they land; a test on a
	// shared machine must not stop other people's processes: absolute
	// paths under the watched folder only (the workloads below use them).
	s.kernCfg.BurstRelative = false
	if err := l.SetConfig(s.kernCfg); err != nil {
		t.Fatal(err)
	}

	files, err := fileactivity.New(fileactivity.Config{Backend: fileactivity.BackendFanotify, Paths: []string{watch}, ProcRoot: "/proc",
		Self: os.Getpid(), NoOpenPerm: true, NoOpenPermWhy: "test"}, guard, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w := kernel.NewWatch(kernel.WatchOptions{Layer: l, Judge: s.judgeStop, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	seen := make(chan string, 1024)
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := files.Run(ctx, func(ev event.Event) {
			if ev.File != nil {
				select {
				case seen <- ev.File.Path:
				default:
				}
			}
		})
		if err != nil {
			t.Errorf("file source: %v", err)
		}
	}()
	go func() { defer wg.Done(); w.Run(ctx, func(event.Event) {}) }()
	// Ready once a probe's write is reported.
	probe := filepath.Join(watch, "probe.txt")
	deadline := time.Now().Add(20 * time.Second)
	for ready := false; !ready; {
		if time.Now().After(deadline) {
			t.Fatal("the file source never reported the probe")
		}
		// Written by a child: the source ignores the sensor's (this test's) own files.
		exec.Command("/bin/sh", "-c", `echo probe > "$0"`, probe).Run()
		select {
		case p := <-seen:
			ready = p == probe
		case <-time.After(100 * time.Millisecond):
		}
	}
	os.Remove(probe)
	for len(seen) > 0 {
		<-seen
	}

	// A tree of 2,000 small text files to archive and extract.
	for d := range 20 {
		dir := filepath.Join(src, "data", fmt.Sprintf("dept%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 100 {
			body := strings.Repeat(fmt.Sprintf("till %d receipt %d total %d.%02d\n", d, f, f*7, f%100), 20)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("r%03d.csv", f)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	archive := filepath.Join(src, "data.tar")
	if out, err := exec.Command("tar", "-cf", archive, "-C", src, "data").CombinedOutput(); err != nil {
		t.Fatalf("tar -cf: %v %s", err, out)
	}
	git := "git -c user.name=t -c user.email=t@example.invalid -c init.defaultBranch=main"
	x, y := filepath.Join(watch, "x"), filepath.Join(watch, "y")
	workloads := []struct{ name, script string }{
		{"tar extract", "mkdir " + x + " && tar -xf " + archive + " -C " + x},
		{"gzip -r", "gzip -r " + x},
		{"cp -r (with the decoys)", "mkdir " + y + " && cp -r " + watch + "/0* " + watch + "/zz* " + x + " " + y + "/"},
		// By absolute path, so it counts in this test (see above): an
		// export of 200 small files by one shell crosses the burst threshold.
		{"export of 200 files", "mkdir " + watch + "/exp && for i in $(seq 1 200); do echo \"row $i\" > " + watch + "/exp/r$i.csv; done"},
		{"git init, add, commit", "cd " + y + " && " + git + " init -q && " + git + " add -A && " + git + " commit -q -m import"},
	}
	for _, wl := range workloads {
		cmd := exec.Command("/bin/sh", "-c", wl.script)
		cmd.Dir = watch
		done := make(chan error, 1)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v (%s)", wl.name, err, out.String())
			}
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("%s did not finish in 2 minutes (stopped and never resumed?)", wl.name)
		}
	}
	for _, r := range []kernel.Reason{kernel.ReasonBurst, kernel.ReasonDecoyOpen, kernel.ReasonDecoyRename, kernel.ReasonDecoyUnlink, kernel.ReasonDecoyLink} {
		if n := w.Verdicts(r, "kill"); n != 0 {
			t.Errorf("%v %s stops judged malicious during honest work", n, r)
		}
	}
	mu.Lock()
	for _, v := range verdicts {
		t.Errorf("file guard verdict during honest work: %s", v.Message)
	}
	mu.Unlock()
	bursts, decoys := w.Verdicts(kernel.ReasonBurst, "resume"), w.Verdicts(kernel.ReasonDecoyOpen, "resume")
	t.Logf("kernel stops judged honest and resumed: %v burst, %v decoy name elsewhere", bursts, decoys)
	if bursts < 1 {
		t.Error("no burst stop of the 200-file export: the burst tripwire did not fire")
	}
	if decoys < 1 {
		t.Error("cp -r of the decoys' names elsewhere was not stopped and resumed: the decoy tripwire did not fire")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
