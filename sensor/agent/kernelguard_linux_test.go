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

// guardRig is what the sensor wires for a watched folder with the kernel
// layer armed in enforce mode (decoy and burst tripwires,
// files.open_permission unless-kernel: no permission event per open), with
// a file guard in enforce mode judging the burst stops. The burst tripwire
// counts absolute paths under the watched folder only (see newGuardRig).
type guardRig struct {
	watch string // the watched folder
	src   string // a scratch folder outside it
	w     *kernel.Watch
	mu    sync.Mutex
	guard []event.Event // the file guard's verdicts
}

// newGuardRig arms the layer, the decoys, the file guard and the kernel
// watch on a fresh watched folder, and returns once the file source
// reports. Cleanup resumes anything still stopped and removes the pins.
func newGuardRig(t *testing.T, tools ...string) *guardRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer and fanotify need root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	// Folders first: their removal at the end must come after the layer's.
	r := &guardRig{watch: t.TempDir(), src: t.TempDir()}
	state := t.TempDir()
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
		// Stand the stopping tripwires down, then let go anything still
		// stopped (the test ended before judging it).
		off := kcfg
		off.Decoys, off.Burst = false, false
		if err := l.SetConfig(off); err != nil {
			t.Errorf("standing the tripwires down: %v", err)
		}
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
	set, err := canary.Plant(state, []string{r.watch})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := loadRansomwareRules(nil)
	if err != nil {
		t.Fatal(err)
	}
	guard := fileguard.New(fileguard.Options{Rules: rules, Enforce: true, ProcRoot: "/proc", Self: os.Getpid(), Canaries: set, Log: log,
		Emit: func(ev event.Event) { r.mu.Lock(); r.guard = append(r.guard, ev); r.mu.Unlock() }})
	guard.SetNoOpenPerm(true) // as the sensor does with the source below
	cfg := config.Default()
	cfg.Mode = "enforce"
	cfg.Process.ProcRoot = "/proc"
	cfg.Files.OpenPermission = config.OpenPermissionUnlessKernel
	s := &Sensor{cfg: cfg, log: log, kern: l, kernCfg: kcfg, canaries: set, guard: guard}
	armed, why := s.armKernelFiles(cfg, []string{r.watch})
	if !armed {
		t.Fatalf("kernel tripwires not armed: %s", why)
	}
	// The sensor counts changes under the watched folders only (a test
	// on a shared machine must not stop other people's processes): the
	// kernel places relative paths by the folder's identity.
	ids, err := l.GuardedRootIDs()
	if err != nil {
		t.Fatal(err)
	}
	want, err := kernel.DirID(r.watch)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != want {
		t.Fatalf("guarded roots' identities %+v, want the watched folder's alone %+v", ids, want)
	}

	files, err := fileactivity.New(fileactivity.Config{Backend: fileactivity.BackendFanotify, Paths: []string{r.watch}, ProcRoot: "/proc",
		Self: os.Getpid(), NoOpenPerm: true, NoOpenPermWhy: "test"}, guard, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.w = kernel.NewWatch(kernel.WatchOptions{Layer: l, Judge: s.judgeStop, Log: log})
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
	go func() { defer wg.Done(); r.w.Run(ctx, func(event.Event) {}) }()
	// Ready once a probe's write is reported.
	probe := filepath.Join(r.watch, "probe.txt")
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
	// The source keeps reporting into seen; nobody reads it from here on
	// (a full channel drops, it never blocks).
	return r
}

// run runs argv in the watched folder and fails the test if it does not
// exit 0 within two minutes (a process stopped and never resumed).
func (r *guardRig) run(t *testing.T, name string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = r.watch
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v (%s)", name, err, out.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish in 2 minutes (stopped and never resumed?)", name)
	}
	return out.String()
}

// sh runs a shell script (built from the test's own paths) in the watched
// folder, like run.
func (r *guardRig) sh(t *testing.T, name, script string) string {
	t.Helper()
	return r.run(t, name, "/bin/sh", "-c", script)
}

// honest fails the test if a kernel stop was judged malicious or the file
// guard gave a verdict, and returns the burst and decoy-name stops that
// were judged honest and resumed.
func (r *guardRig) honest(t *testing.T) (bursts, decoys float64) {
	t.Helper()
	for _, why := range []kernel.Reason{kernel.ReasonBurst, kernel.ReasonDecoyOpen, kernel.ReasonDecoyRename, kernel.ReasonDecoyUnlink, kernel.ReasonDecoyLink} {
		if n := r.w.Verdicts(why, "kill"); n != 0 {
			t.Errorf("%v %s stops judged malicious during honest work", n, why)
		}
	}
	r.mu.Lock()
	for _, v := range r.guard {
		t.Errorf("file guard verdict during honest work: %s", v.Message)
	}
	r.mu.Unlock()
	bursts, decoys = r.w.Verdicts(kernel.ReasonBurst, "resume"), r.w.Verdicts(kernel.ReasonDecoyOpen, "resume")
	t.Logf("kernel stops judged honest and resumed: %v burst, %v decoy name elsewhere", bursts, decoys)
	return bursts, decoys
}

// TestBenignWorkloadsUnderKernelGuard runs honest bulk work in a folder
// watched with the kernel guard armed (guardRig): a tar extract, a
// compressor over the tree, cp -r (which copies the decoys' names too) and
// git init/add/commit. None may be killed; brief kernel stops that the
// sensor judged honest and resumed are counted and logged.
func TestBenignWorkloadsUnderKernelGuard(t *testing.T) {
	r := newGuardRig(t, "tar", "gzip", "cp", "git")
	watch, src := r.watch, r.src
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
		r.sh(t, wl.name, wl.script)
	}
	bursts, decoys := r.honest(t)
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
