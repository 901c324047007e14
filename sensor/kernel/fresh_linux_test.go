package kernel

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/response"
)

// freshSensor is the Go side of the sensor for the fresh-exec tripwire: the
// process feed into a small table (real kernel records), the watch, its
// detector, and the real responder in enforce mode.
type freshSensor struct {
	mu      sync.Mutex
	procs   map[int]*event.Process
	events  []event.Event
	dets    []pipeline.Detection
	cancel  context.CancelFunc
	done    sync.WaitGroup
	agent   int
	approve bool
}

func startFreshSensor(t *testing.T, l *Layer, agent int, approve bool) *freshSensor {
	s := &freshSensor{procs: map[int]*event.Process{}, agent: agent, approve: approve}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	feed := l.ProcessFeed()
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		feed.Run(ctx, func(ev process.KernelEvent) {
			if ev.Kind != process.KernelExec {
				return
			}
			s.mu.Lock()
			s.procs[ev.PID] = &event.Process{PID: int64(ev.PID), Executable: ev.Executable, Args: ev.Args}
			s.mu.Unlock()
		})
	}()
	log := slog.New(slog.DiscardHandler)
	resp := response.New(response.ModeEnforce, nil, log)
	w := NewWatch(WatchOptions{
		Layer: l,
		Process: func(pid int) *event.Process {
			s.mu.Lock()
			defer s.mu.Unlock()
			if p, ok := s.procs[pid]; ok {
				c := *p
				return &c
			}
			return nil
		},
		FeedAt:   feed.Applied,
		Approved: func(pid int) bool { return s.approve && descendantOf(pid, s.agent) },
		Log:      log,
	})
	go func() {
		defer s.done.Done()
		w.Run(ctx, func(ev event.Event) {
			dets := w.Detect(&ev)
			for i := range dets {
				resp.Respond(ctx, &dets[i])
			}
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.dets = append(s.dets, dets...)
			s.mu.Unlock()
		})
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *freshSensor) stop() {
	if s.cancel != nil {
		s.cancel()
		s.done.Wait()
		s.cancel = nil
	}
}

func (s *freshSensor) detections() []pipeline.Detection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pipeline.Detection(nil), s.dets...)
}

// descendantOf walks pid's parents in /proc up to ancestor.
func descendantOf(pid, ancestor int) bool {
	for range 64 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

// stoppedUnder lists processes in the stopped state below ancestor.
func stoppedUnder(ancestor int) []int {
	des, _ := os.ReadDir("/proc")
	var out []int
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil || pid == ancestor {
			continue
		}
		if stoppedState(pid) && descendantOf(pid, ancestor) {
			out = append(out, pid)
		}
	}
	return out
}

// startAgent starts a stand-in RMM agent running payload with sh; taint
// marks it in the kernel before it forks anything. The returned function
// waits for it (bounded).
func startAgent(t *testing.T, dir, payload string, taint func(pid int)) (*exec.Cmd, func()) {
	t.Helper()
	p := filepath.Join(dir, "payload.sh")
	if err := os.WriteFile(p, []byte(payload+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command("/bin/sh", "-c", `read go; /bin/sh "$0"`, p)
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill() })
	if taint != nil {
		taint(agent.Process.Pid)
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	return agent, func() { waitBounded(t, agent, 60*time.Second) }
}

// decodedPayload is the Kaseya chain's shape: a script arrives base64
// encoded, is decoded to a file, made executable and run. Run, it writes
// marker.
func decodedPayload(dir string) string { return decodedWith(dir, "base64 -d") }

// decodedWith is decodedPayload with another decoding command line.
func decodedWith(dir, decoder string) string {
	inner := "#!/bin/sh\necho ran > " + filepath.Join(dir, "marker") + "\n"
	out := filepath.Join(dir, "upd")
	return fmt.Sprintf("echo %s | %s > %s\nchmod +x %s\n%s\necho after > %s",
		base64.StdEncoding.EncodeToString([]byte(inner)), decoder, out, out, out, filepath.Join(dir, "agent-after"))
}

// killedFresh checks that the detections hold one fresh-exec kill that the
// responder carried out.
func killedFresh(t *testing.T, dets []pipeline.Detection, why string) {
	t.Helper()
	for _, d := range dets {
		if d.Alert.Rule == nil || d.Alert.Rule.ID != RuleFresh {
			continue
		}
		if d.Response != event.ActionKill || d.Alert.Tillwatch == nil || d.Alert.Tillwatch.Response == nil ||
			d.Alert.Tillwatch.Response.Result != event.ResultOK {
			t.Fatalf("fresh-exec detection without a carried-out kill: %+v", d.Alert.Tillwatch)
		}
		t.Logf("%s: %s", d.Alert.Rule.ID, d.Alert.Message)
		if !strings.Contains(d.Alert.Message, why) {
			t.Errorf("judgement %q, want %q", d.Alert.Message, why)
		}
		return
	}
	t.Fatalf("no %s detection among %d", RuleFresh, len(dets))
}

// TestFreshExecDecodedPayloadKilled: a payload decoded under a stand-in
// agent is stopped at exec before it runs a single instruction, judged and
// its tree killed: decoded by base64 or openssl, by a renamed copy of
// base64 (the copy itself is stopped and killed at its exec), and written
// by anything under an agent that is not approved.
func TestFreshExecDecodedPayloadKilled(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true, FreshExec: true})
	cases := []struct {
		name, decoder, why string
		approved           bool
	}{
		{"base64 -d", "base64 -d", "decoded by base64 -d", true},
		{"openssl base64 -d", "openssl base64 -d", "decoded by openssl -d", true},
		{"renamed base64", "cp /usr/bin/base64 ./kcert && ./kcert -d", "copy of /usr/bin/base64 under another name", true},
		{"unapproved agent", "base64 -d | cat", "under an RMM agent that is not approved", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, wait := startJudgedAgent(t, l, dir, "cd "+dir+"\n"+decodedWith(dir, c.decoder), c.approved)
			wait()
			if exists(filepath.Join(dir, "marker")) {
				t.Fatal("the decoded payload ran")
			}
			if !exists(filepath.Join(dir, "agent-after")) {
				t.Error("the agent's script did not go on after its child was killed")
			}
			waitFor(t, 10*time.Second, "the judgement", func() bool { return len(s.detections()) > 0 })
			killedFresh(t, s.detections(), c.why)
		})
	}
}

// TestFreshExecWhileSensorDown: the layer is loaded and the sensor's Go
// side is not running when the payload is exec'd. The process stays
// stopped; the restarted sensor finds it in the pinned map, judges it from
// what the kernel kept (the fresh map and the pinned process ring) and
// kills it.
func TestFreshExecWhileSensorDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	cfg := Config{PinDir: testPinDir(t), Enforce: true, FreshExec: true}
	t.Cleanup(func() { Release(cfg.PinDir) })
	l1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	agent, wait := startAgent(t, dir, decodedPayload(dir), func(pid int) {
		if err := l1.TaintAgent(pid); err != nil {
			t.Fatal(err)
		}
		if err := l1.Close(); err != nil { // the sensor dies; pins stay
			t.Fatal(err)
		}
	})
	var pid int
	waitFor(t, 20*time.Second, "the payload to be stopped", func() bool {
		st := stoppedUnder(agent.Process.Pid)
		if len(st) == 1 {
			pid = st[0]
		}
		return pid != 0
	})
	// It stays stopped while no sensor runs: half a second of a stopped
	// process not running is asserted, not waited for.
	time.Sleep(500 * time.Millisecond)
	if !stoppedState(pid) || exists(filepath.Join(dir, "marker")) {
		t.Fatal("the stopped payload went on without a sensor")
	}

	l2, err := Load(cfg) // the restarted sensor
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Unpin() })
	st, err := l2.Stopped()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range st {
		found = found || (x.PID == pid && x.Reason == ReasonFreshExec && x.Name == "upd")
	}
	if !found {
		t.Fatalf("stopped map after restart %+v, want pid %d for upd", st, pid)
	}
	s := startFreshSensor(t, l2, agent.Process.Pid, true)
	wait()
	if exists(filepath.Join(dir, "marker")) {
		t.Fatal("the decoded payload ran")
	}
	waitFor(t, 10*time.Second, "the judgement", func() bool { return len(s.detections()) > 0 })
	killedFresh(t, s.detections(), "decoded by base64 -d")
	if !zombie(pid) {
		t.Errorf("pid %d still alive after the judgement", pid)
	}
}

// TestFreshExecInstallerRuns: an approved agent's routine deployment (curl
// downloads an installer from a server, chmod +x, run) is stopped at exec,
// judged honest and let go: it runs to its end, the judgement is an
// info-level record, and the file is forgotten (its second run is not
// stopped).
func TestFreshExecInstallerRuns(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	l := newTestLayer(t, Config{Enforce: true, FreshExec: true})
	dir := t.TempDir()
	installed, url := installerServer(t, dir)
	inst := filepath.Join(dir, "installer.sh")
	payload := fmt.Sprintf("%s -fsS -o %s %s\nchmod +x %s\n%s\n%s", curl, inst, url, inst, inst, inst)
	s, wait := startJudgedAgent(t, l, dir, payload, true)
	wait()
	if b, _ := os.ReadFile(installed); string(b) != "installed\ninstalled\n" {
		t.Fatalf("installer ran %q, want twice", b)
	}
	dets := s.detections()
	if len(dets) != 1 {
		t.Fatalf("%d detections, want the one release record: %+v", len(dets), dets)
	}
	d := dets[0]
	if d.Alert.Rule == nil || d.Alert.Rule.ID != RuleFreshLet || d.Response != "" || d.Alert.Event.Action != ActionRelease {
		t.Fatalf("detection %+v %+v, want %s without a response", d.Alert.Rule, d.Alert.Event, RuleFreshLet)
	}
	t.Logf("%s: %s", d.Alert.Rule.ID, d.Alert.Message)
	if !strings.Contains(d.Alert.Message, "downloaded by curl") {
		t.Errorf("judgement %q", d.Alert.Message)
	}
	if _, ok := l.Fresh("installer.sh"); ok {
		t.Error("the installer let run is still in the fresh map")
	}
}

// TestFreshExecUntaintedNeverStopped: the same decoded payload outside any
// agent's tree runs, and the kernel records no stop.
func TestFreshExecUntaintedNeverStopped(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true, FreshExec: true})
	dir := t.TempDir()
	_, wait := startAgent(t, dir, decodedPayload(dir), nil)
	wait()
	if !exists(filepath.Join(dir, "marker")) {
		t.Fatal("an untainted payload did not run")
	}
	if _, ok := l.Fresh("upd"); ok {
		t.Error("a file written outside any agent's tree was recorded as fresh")
	}
	st, err := l.Stopped()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) > 0 {
		t.Errorf("stopped: %+v", st)
	}
}

// TestFreshExecRoutineNotStopped: routine work under an agent with the
// tripwire armed and no sensor to judge anything (a stop would hang the
// agent): git, writing and reading files, unpacking an archive and running
// its setup script through sh, running system tools. Nothing is stopped.
func TestFreshExecRoutineNotStopped(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true, FreshExec: true})
	dir := t.TempDir()
	git := ""
	if _, err := exec.LookPath("git"); err == nil {
		git = "git init -q repo && cd repo && echo x > f && git add f && git -c user.email=a@b -c user.name=a commit -qm m && git log --oneline >/dev/null && cd ..\n"
	}
	payload := "cd " + dir + "\n" + git +
		"printf 'key: 1\\n' > app.conf && cat app.conf >/dev/null\n" +
		"mkdir pkg && printf '#!/bin/sh\\necho set up > " + filepath.Join(dir, "setup-ran") + "\\n' > pkg/setup.sh && tar -czf pkg.tgz pkg && rm -r pkg && tar -xzf pkg.tgz\n" +
		"sh ./pkg/setup.sh\n" +
		"ls -l >/dev/null && date >/dev/null && id >/dev/null\n" +
		"echo done > " + filepath.Join(dir, "routine-done")
	_, wait := startAgent(t, dir, payload, func(pid int) {
		if err := l.TaintAgent(pid); err != nil {
			t.Fatal(err)
		}
	})
	wait()
	for _, f := range []string{"setup-ran", "routine-done"} {
		if !exists(filepath.Join(dir, f)) {
			t.Errorf("%s missing: routine work under the agent did not finish", f)
		}
	}
	if st, _ := l.Stopped(); len(st) > 0 {
		t.Errorf("stopped: %+v", st)
	}
	if _, ok := l.Fresh("setup.sh"); !ok {
		t.Error("a script the tree unpacked is not in the fresh map: the tripwire would not see it run directly")
	}
}

// TestTaintReachesWhatTheAgentForkedFirst: the watch learns of an agent's
// exec after the fact; a procedure it forked at once is marked too, as the
// kernel would have at fork (a child starts a family, its children join).
func TestTaintReachesWhatTheAgentForkedFirst(t *testing.T) {
	l := newTestLayer(t, Config{})
	agent := exec.Command("/bin/sh", "-c", `/bin/sh -c 'sleep 60; :' & wait`)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	var child, grandchild int
	t.Cleanup(func() {
		for _, pid := range []int{grandchild, child} {
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		agent.Process.Kill()
		agent.Wait()
	})
	waitFor(t, 10*time.Second, "the procedure and its sleep", func() bool {
		ch := childrenIn("/proc")
		if c := ch[agent.Process.Pid]; len(c) == 1 {
			child = c[0]
			if g := ch[child]; len(g) == 1 {
				grandchild = g[0]
			}
		}
		return grandchild != 0
	})
	w := NewWatch(WatchOptions{Layer: l, IsAgent: func(string, string) bool { return true }})
	ev := event.Event{Event: event.Meta{Dataset: event.DatasetProcess, Action: "exec"}, Process: &event.Process{PID: int64(agent.Process.Pid), Name: "agent"}}
	w.Detect(&ev)
	for pid, want := range map[int]int{agent.Process.Pid: 0, child: child, grandchild: child} {
		if fam, ok := l.Tainted(pid); !ok || fam != want {
			t.Errorf("pid %d tainted %v family %d, want family %d", pid, ok, fam, want)
		}
	}
}

// startSpawner starts, outside every agent's tree, what a service manager,
// cron or at is to a tree that asks it to run something: a process that
// reads a path from a FIFO and execs it, so that what runs is not the
// tree's child in the kernel.
func startSpawner(t *testing.T, dir string) (fifo string, wait func() error) {
	t.Helper()
	fifo = filepath.Join(dir, "spawn")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sp := exec.Command("/bin/sh", "-c", `read p < "$0"; exec "$p"`, fifo)
	if err := sp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Process.Kill() })
	done := make(chan error, 1)
	go func() { done <- sp.Wait() }()
	return fifo, func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			sp.Process.Kill()
			<-done
			t.Fatal("the spawned program did not end in 30 s")
			return nil
		}
	}
}

// TestFreshExecHandoff: a tree under an agent makes a file and has a
// process outside the tree run it (systemd-run, a unit file, a crontab
// line: the child of pid 1 or cron is not the tree's). The run is stopped
// at exec like the tree's own and judged by who wrote the file: a decoded
// payload is killed before it runs; an approved agent's downloaded
// installer is let go.
func TestFreshExecHandoff(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true, FreshExec: true})
	t.Run("decoded payload", func(t *testing.T) {
		dir := t.TempDir()
		fifo, spawned := startSpawner(t, dir)
		inner := "#!/bin/sh\necho ran > " + filepath.Join(dir, "marker") + "\n"
		out := filepath.Join(dir, "svc-payload")
		payload := fmt.Sprintf("echo %s | base64 -d > %[2]s\nchmod +x %[2]s\necho %[2]s > %[3]s\nsleep 1",
			base64.StdEncoding.EncodeToString([]byte(inner)), out, fifo)
		s, wait := startJudgedAgent(t, l, dir, payload, true)
		wait()
		err := spawned()
		if exists(filepath.Join(dir, "marker")) {
			t.Fatal("the handed-off payload ran")
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("the spawned payload ended with %v, want killed", err)
		}
		waitFor(t, 10*time.Second, "the judgement", func() bool { return len(s.detections()) > 0 })
		killedFresh(t, s.detections(), "decoded by base64 -d")
		if d := s.detections()[0]; d.Alert.Event.Reason != ReasonFreshHandoff.String() || !strings.Contains(d.Alert.Message, "hand-off") {
			t.Errorf("reason %q, message %q: want the hand-off named", d.Alert.Event.Reason, d.Alert.Message)
		}
	})
	t.Run("namesake made later", func(t *testing.T) {
		// The tree (under an agent that is not approved) makes a program;
		// someone else then makes another of the same name, changed after
		// it, and has it run. Not the tree's file (another inode): let go.
		dir := t.TempDir()
		fifo, spawned := startSpawner(t, dir)
		mine := filepath.Join(dir, "tree", "svc-tool")
		other := filepath.Join(dir, "other", "svc-tool")
		for _, d := range []string{filepath.Dir(mine), filepath.Dir(other)} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		payload := fmt.Sprintf("printf '#!/bin/sh\\nexit 0\\n' > %[1]s\nchmod +x %[1]s", mine)
		s, wait := startJudgedAgent(t, l, dir, payload, false)
		wait()
		if ff, ok := l.Fresh("svc-tool"); !ok || ff.Ino == 0 {
			t.Fatalf("fresh record %+v, %v: want the file's inode", ff, ok)
		}
		time.Sleep(20 * time.Millisecond) // a later change time than the tree's write
		script(t, other, "echo ran > "+filepath.Join(dir, "marker"))
		if err := os.WriteFile(fifo, []byte(other+"\n"), 0); err != nil {
			t.Fatal(err)
		}
		if err := spawned(); err != nil {
			t.Errorf("the namesake ended with %v", err)
		}
		if !exists(filepath.Join(dir, "marker")) {
			t.Fatal("the namesake did not run")
		}
		waitFor(t, 10*time.Second, "the judgement", func() bool { return len(s.detections()) > 0 })
		d := s.detections()[0]
		if d.Alert.Rule == nil || d.Alert.Rule.ID != RuleFreshLet || !strings.Contains(d.Alert.Message, "namesake") {
			t.Fatalf("detection %+v: %q, want a namesake let go", d.Alert.Rule, d.Alert.Message)
		}
	})
	t.Run("approved installer", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("no curl")
		}
		dir := t.TempDir()
		fifo, spawned := startSpawner(t, dir)
		installed, url := installerServer(t, dir)
		inst := filepath.Join(dir, "svc-installer")
		// The tree waits for the run it asked for, as systemctl start does.
		payload := fmt.Sprintf("%s -fsS -o %[2]s %[3]s\nchmod +x %[2]s\necho %[2]s > %[4]s\nfor i in $(seq 100); do [ -e %[5]s ] && break; sleep 0.1; done",
			curl, inst, url, fifo, installed)
		s, wait := startJudgedAgent(t, l, dir, payload, true)
		wait()
		if err := spawned(); err != nil {
			t.Errorf("the handed-off installer ended with %v", err)
		}
		if b, _ := os.ReadFile(installed); string(b) != "installed\n" {
			t.Fatalf("installer ran %q, want once", b)
		}
		waitFor(t, 10*time.Second, "the judgement", func() bool { return len(s.detections()) > 0 })
		d := s.detections()[0]
		if d.Alert.Rule == nil || d.Alert.Rule.ID != RuleFreshLet || d.Response != "" || d.Alert.Event.Reason != ReasonFreshHandoff.String() {
			t.Fatalf("detection %+v %+v, want %s (hand-off) without a response", d.Alert.Rule, d.Alert.Event, RuleFreshLet)
		}
		t.Logf("%s: %s", d.Alert.Rule.ID, d.Alert.Message)
	})
}

// installerServer serves, on loopback, an installer script that appends a
// line to the returned file each time it runs.
func installerServer(t *testing.T, dir string) (installed, url string) {
	t.Helper()
	installed = filepath.Join(dir, "installed")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "#!/bin/sh\necho installed >> "+installed+"\n")
	}))
	t.Cleanup(srv.Close)
	return installed, srv.URL
}

// startJudgedAgent starts a stand-in agent running payload, marked in the
// kernel, with the sensor's Go side judging what the tripwires stop
// (approve: the agent is an approved one).
func startJudgedAgent(t *testing.T, l *Layer, dir, payload string, approve bool) (*freshSensor, func()) {
	t.Helper()
	var s *freshSensor
	_, wait := startAgent(t, dir, payload, func(pid int) {
		s = startFreshSensor(t, l, pid, approve)
		if err := l.TaintAgent(pid); err != nil {
			t.Fatal(err)
		}
	})
	return s, wait
}
