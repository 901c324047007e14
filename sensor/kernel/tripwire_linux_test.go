package kernel

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scene is one attack rehearsal: a stand-in sensor (a renamed sleep the
// layer protects), a folder of files to encrypt, a stand-in RMM agent (a
// shell the layer taints; everything it starts inherits the taint in the
// kernel) and the tamper records the kernel wrote.
type scene struct {
	t       *testing.T
	l       *Layer
	dir     string
	data    string
	name    string // the stand-in sensor's unique name
	sensor  *exec.Cmd
	mu      sync.Mutex
	tampers []Tamper
}

const nFiles = 200

func newScene(t *testing.T, l *Layer) *scene {
	s := &scene{t: t, l: l, dir: t.TempDir(), name: "tw-sensor-" + unique(t)}
	s.data = filepath.Join(s.dir, "data")
	if err := os.Mkdir(s.data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range nFiles {
		if err := os.WriteFile(filepath.Join(s.data, fmt.Sprintf("doc%03d.txt", i)), []byte("plain\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	bin := filepath.Join(s.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stand := filepath.Join(bin, s.name)
	copyFile(t, sleep, stand, 0o755)
	s.sensor = exec.Command(stand, "300")
	if err := s.sensor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.sensor.Process.Kill(); s.sensor.Wait() })
	pid := s.sensor.Process.Pid
	if err := l.Protect(pid); err != nil {
		t.Fatal(err)
	}
	// What names this stand-in sensor: its unit, binary, pid and path.
	if err := l.AddTargets(s.name, s.name+".service", strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTools(DefaultTools...); err != nil {
		t.Fatal(err)
	}
	if err := l.AddSpawners(DefaultSpawners...); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTargets(LinkPinNames()...); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTargets(PreloadFile); err != nil {
		t.Fatal(err)
	}
	// A fake systemctl: if it ever ran, it would leave a marker behind.
	script(t, filepath.Join(bin, "systemctl"), `echo "$@" > "`+filepath.Join(s.dir, "systemctl-ran")+`"`)
	// A stand-in systemd-run runs its command (the real one has pid 1
	// start it, outside the caller's tree).
	script(t, filepath.Join(bin, "systemd-run"), `while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"`)
	script(t, filepath.Join(bin, "apt-get"), `echo installing "$@" > "`+filepath.Join(s.dir, "apt-get-ran")+`"`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.TamperFeed().Run(ctx, func(tp Tamper) { s.mu.Lock(); s.tampers = append(s.tampers, tp); s.mu.Unlock() })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func script(t *testing.T, path, body string) {
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// encryptLoop is what the payload does after switching the sensor off:
// rewrite every file of the folder as fast as the shell goes.
func (s *scene) encryptLoop() string {
	return `for f in "` + s.data + `"/*; do echo encrypted > "$f"; done; echo finished > "` + filepath.Join(s.dir, "payload-finished") + `"`
}

// runAgent starts a stand-in agent (tainted before it forks anything) that
// runs payload with sh, and waits for the agent. tainted=false runs the
// same without the taint, as any admin shell would.
func (s *scene) runAgent(payload string, tainted bool) {
	t := s.t
	p := filepath.Join(s.dir, "payload.sh")
	if err := os.WriteFile(p, []byte(payload+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command("/bin/sh", "-c", `read go; /bin/sh "$0"; echo agent-alive > "$1"`, p, filepath.Join(s.dir, "agent-alive"))
	agent.Env = append(os.Environ(), "PATH="+filepath.Join(s.dir, "bin")+":"+os.Getenv("PATH"))
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	if tainted {
		if err := s.l.TaintAgent(agent.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintln(stdin, "go")
	stdin.Close()
	waitBounded(t, agent, 60*time.Second)
}

func waitBounded(t *testing.T, c *exec.Cmd, bound time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(bound):
		c.Process.Kill()
		<-done
		t.Fatalf("%s did not finish in %s", c.Path, bound)
	}
}

// changed counts the folder's files that are no longer "plain".
func (s *scene) changed() int {
	n := 0
	des, _ := os.ReadDir(s.data)
	for _, de := range des {
		if b, err := os.ReadFile(filepath.Join(s.data, de.Name())); err != nil || string(b) != "plain\n" {
			n++
		}
	}
	return n
}

func (s *scene) sensorAlive() bool {
	return s.sensor.Process.Signal(syscall.Signal(0)) == nil && s.sensor.ProcessState == nil && !zombie(s.sensor.Process.Pid)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// waitTamper waits for a tamper record with reason r.
func (s *scene) waitTamper(r Reason) Tamper {
	var got Tamper
	defer func() {
		if got.Reason != r {
			s.mu.Lock()
			s.t.Logf("records seen instead: %+v", s.tampers)
			s.mu.Unlock()
		}
	}()
	waitFor(s.t, 10*time.Second, "a "+r.String()+" record", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, tp := range s.tampers {
			if tp.Reason == r {
				got = tp
				return true
			}
		}
		return false
	})
	return got
}

// TestTamperTripwires rehearses the attack: a tree under a stand-in RMM
// agent switches the sensor off, then encrypts a folder at full speed. The
// kernel kills the tree at the signal or at the tool's exec, and the rest
// of its family at their next syscall; at most one file may change.
func TestTamperTripwires(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true})
	cases := []struct {
		name       string
		payload    func(s *scene) string
		reason     Reason
		sensorDies bool // the kill syscall itself completes
	}{
		{"kill -9 pid", func(s *scene) string {
			return fmt.Sprintf("kill -9 %d\n%s", s.sensor.Process.Pid, s.encryptLoop())
		}, ReasonSignal, true},
		{"kill -9 $(pidof name)", func(s *scene) string {
			return fmt.Sprintf("kill -9 $(pidof %s)\n%s", s.name, s.encryptLoop())
		}, ReasonExecTool, false},
		{"systemctl stop unit", func(s *scene) string {
			return fmt.Sprintf("systemctl stop %s.service\n%s", s.name, s.encryptLoop())
		}, ReasonExecTool, false},
		{"systemd-run kill", func(s *scene) string {
			return fmt.Sprintf("systemd-run --wait kill -9 %d\n%s", s.sensor.Process.Pid, s.encryptLoop())
		}, ReasonExecTool, false},
		{"encryptor forked before the kill", func(s *scene) string {
			// The encryptor waits on a pipe so it is surely forked first
			// and surely runs after the kill.
			return fmt.Sprintf("mkfifo %[1]s/go\n(read x < %[1]s/go; %[2]s) &\nkill -9 %[3]d\necho go > %[1]s/go\nwait",
				s.dir, s.encryptLoop(), s.sensor.Process.Pid)
		}, ReasonSignal, true},
		{"payload decoded from base64", func(s *scene) string {
			inner := fmt.Sprintf("kill -9 %d\n%s\n", s.sensor.Process.Pid, s.encryptLoop())
			return fmt.Sprintf("echo %s | base64 -d > %[2]s/p.sh\nsh %[2]s/p.sh", base64.StdEncoding.EncodeToString([]byte(inner)), s.dir)
		}, ReasonSignal, true},
		// The sensor's binary (named by its basename in targets) reached
		// by every way of writing it: a file renamed over it, and the raw
		// open syscalls a payload can make without going through openat.
		{"file renamed over the binary", func(s *scene) string {
			return fmt.Sprintf("echo evil > %[1]s/evil\nmv %[1]s/evil %[1]s/bin/%[2]s\n%[3]s", s.dir, s.name, s.encryptLoop())
		}, ReasonPath, false},
		{"raw open", func(s *scene) string { return rawOpen(s, "syscall(2, $p, 1, 0)") }, ReasonPath, false},
		{"raw creat", func(s *scene) string { return rawOpen(s, "syscall(85, $p, 0644)") }, ReasonPath, false},
		// struct open_how: flags O_WRONLY, mode, resolve.
		{"raw openat2", func(s *scene) string {
			return rawOpen(s, `my $how = pack("QQQ", 1, 0, 0); syscall(437, -100, $p, $how, 24)`)
		}, ReasonPath, false},
		// truncate(2) by path needs no open; a path padded with "/./"
		// past the 256 bytes the kernel used to read hid the basename.
		{"raw truncate", func(s *scene) string { return rawOpen(s, "syscall(76, $p, 0)") }, ReasonPath, false},
		{"padded path", func(s *scene) string {
			return fmt.Sprintf("perl -e 'my $p = $ARGV[0]; syscall(2, $p, 1, 0)' %s/bin%s/%s\n%s", s.dir, strings.Repeat("/.", 200), s.name, s.encryptLoop())
		}, ReasonPath, false},
		// Signals by the calls kill(2)'s tripwire did not see: sigqueue(3)
		// (rt_sigqueueinfo, a siginfo with SI_QUEUE), and
		// pidfd_send_signal(2) on a /proc/PID folder opened as a pidfd,
		// with no siginfo and with one forging a timer's code (SI_TIMER).
		{"raw sigqueue", func(s *scene) string { return rawSignal(s, "syscall(129, $pid, 9, siginfo(-1))") }, ReasonSignal, true},
		{"raw pidfd from /proc", func(s *scene) string { return rawSignal(s, "syscall(424, procfd(), 9, 0, 0)") }, ReasonSignal, true},
		{"raw pidfd, forged code", func(s *scene) string {
			return rawSignal(s, "syscall(424, procfd(), 9, siginfo(-2), 0)")
		}, ReasonSignal, true},
		// Reaching into the sensor without a signal: a ptrace attach
		// (PTRACE_SEIZE, which stops nothing by itself), a write into its
		// memory, a limit on its descriptors.
		{"raw ptrace seize", func(s *scene) string { return rawSignal(s, "syscall(101, 0x4206, $pid, 0, 0)") }, ReasonReach, false},
		{"raw process_vm_writev", func(s *scene) string {
			return rawSignal(s, `my $b = "x"; my $l = pack("QQ", unpack("Q", pack("p", $b)), 1); my $r = pack("QQ", 4096, 1); syscall(311, $pid, $l, 1, $r, 1, 0)`)
		}, ReasonReach, false},
		// Stopping the sensor instead of killing it (nothing restarts a
		// stopped sensor): SIGSTOP by kill(2), and a ptrace attach (which
		// sends one). The sender dies and the sensor continues itself.
		{"raw kill -STOP", func(s *scene) string { return rawSignal(s, "syscall(62, $pid, 19)") }, ReasonSignal, false},
		{"raw ptrace attach", func(s *scene) string { return rawSignal(s, "syscall(101, 16, $pid, 0, 0)") }, ReasonReach, false},
		// The tripwires' own objects: a handle on the config map by its
		// id (BPF_MAP_GET_FD_BY_ID; with it, every tripwire could be
		// turned off), and the sensor's descriptors copied out of it.
		{"raw bpf map by id", func(s *scene) string {
			info, err := s.l.objs.Config.Info()
			if err != nil {
				s.t.Fatal(err)
			}
			id, _ := info.ID()
			return rawSignal(s, fmt.Sprintf(`my $a = pack("L", %d) . ("\0" x 124); syscall(321, 14, $a, 128)`, id))
		}, ReasonBPF, false},
		{"raw pidfd_getfd", func(s *scene) string { return rawSignal(s, "syscall(438, procfd(), 0, 0)") }, ReasonReach, false},
		{"raw prlimit", func(s *scene) string { return rawSignal(s, `my $l = pack("QQ", 0, 0); syscall(302, $pid, 7, $l, 0)`) }, ReasonReach, false},
		// Starving the sensor with no signal: the idle scheduling class,
		// a nice of 19 (by its process group too), an idle I/O class, an
		// affinity to one CPU the caller keeps busy.
		{"raw sched_setscheduler idle", func(s *scene) string { return rawSignal(s, `my $p = pack("i", 0); syscall(144, $pid, 5, $p)`) }, ReasonReach, false},
		{"raw setpriority", func(s *scene) string { return rawSignal(s, "syscall(141, 0, $pid, 19)") }, ReasonReach, false},
		{"raw setpriority of its group", func(s *scene) string { return rawSignal(s, "syscall(141, 1, $pid, 19)") }, ReasonReach, false},
		{"raw ioprio_set idle", func(s *scene) string { return rawSignal(s, "syscall(251, 1, $pid, 3 << 13)") }, ReasonReach, false},
		// A signal raised for I/O readiness: the sensor named as the
		// descriptor's owner (with F_SETSIG, the kernel would send it
		// SIGKILL when the pipe becomes readable).
		// A link's pin removed (then a kill -9 that lands would detach
		// the tripwire): the pin is a sensor path. The unlink itself
		// completes (the kill lands as it returns); the remover dies and
		// its family is poisoned before a second one.
		// The loader's preload list (here a file of that name in the
		// scene's folder: matched by basename, as /etc's is).
		{"write ld.so.preload", func(s *scene) string {
			return fmt.Sprintf("echo %s/evil.so > %s/ld.so.preload\n%s", s.dir, s.dir, s.encryptLoop())
		}, ReasonPath, false},
		{"rm a link pin", func(s *scene) string {
			return fmt.Sprintf("rm -f %s\n%s", filepath.Join(s.l.PinDir(), "link_tw_kill"), s.encryptLoop())
		}, ReasonPath, false},
		{"raw fcntl F_SETOWN", func(s *scene) string {
			return rawSignal(s, `pipe(my $r, my $w) or die; syscall(72, fileno($r), 8, $pid)`)
		}, ReasonReach, false},
		{"raw fcntl F_SETOWN_EX", func(s *scene) string {
			return rawSignal(s, `pipe(my $r, my $w) or die; my $o = pack("ii", 1, $pid); syscall(72, fileno($r), 15, $o)`)
		}, ReasonReach, false},
		{"raw sched_setaffinity", func(s *scene) string { return rawSignal(s, `my $m = pack("Q", 1); syscall(203, $pid, 8, $m)`) }, ReasonReach, false},
		// Its files in /proc, however spelled: memory (rewritable past
		// page protections), environment, OOM score.
		{"raw /proc mem", func(s *scene) string {
			return rawSignal(s, `sysopen(my $f, "/proc/$pid/mem", O_RDWR) or die "mem: $!"`)
		}, ReasonReach, false},
		{"raw /proc mem through task, relative", func(s *scene) string {
			return rawSignal(s, `chdir("/proc/self/../$pid/task/$pid") or die; sysopen(my $f, "mem", O_RDONLY) or die "mem: $!"`)
		}, ReasonReach, false},
		{"cat /proc environ", func(s *scene) string {
			return fmt.Sprintf("cat /proc/%d/environ > /dev/null\n%s", s.sensor.Process.Pid, s.encryptLoop())
		}, ReasonReach, false},
		{"echo > /proc oom_score_adj", func(s *scene) string {
			return fmt.Sprintf("echo 1000 > /proc/%d/oom_score_adj\n%s", s.sensor.Process.Pid, s.encryptLoop())
		}, ReasonReach, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if strings.HasPrefix(c.name, "raw ") || c.name == "padded path" {
				if _, err := exec.LookPath("perl"); err != nil {
					t.Skip("perl makes the raw syscalls")
				}
			}
			s := newScene(t, l)
			s.runAgent(c.payload(s), true)
			tp := s.waitTamper(c.reason)
			if n := s.changed(); n > 1 {
				t.Errorf("%d of %d files changed, want at most 1", n, nFiles)
			}
			if exists(filepath.Join(s.dir, "payload-finished")) {
				t.Error("the payload ran to its end")
			}
			if exists(filepath.Join(s.dir, "systemctl-ran")) {
				t.Error("systemctl ran")
			}
			if !exists(filepath.Join(s.dir, "agent-alive")) {
				t.Error("the agent itself died; only the tree it started should")
			}
			if !c.sensorDies && !s.sensorAlive() {
				t.Error("the stand-in sensor died")
			}
			if !c.sensorDies {
				// Not left stopped either (a stop lands before its
				// sender dies; the sensor continues itself).
				pid := s.sensor.Process.Pid
				waitFor(t, 10*time.Second, "the stand-in sensor to run again", func() bool { return !stoppedState(pid) })
			}
			if tp.Family == 0 || !l.Hostile(tp.Family) {
				t.Errorf("family %d not declared hostile: %+v", tp.Family, tp)
			}
			t.Logf("%s: %+v; %d files changed", tp.Reason, tp, s.changed())
		})
	}
}

// rawSignal is a payload that reaches the stand-in sensor ($pid) with a
// raw system call (Perl's syscall, x86-64 numbers; siginfo(CODE) packs a
// SIGKILL siginfo with that si_code, procfd() opens /proc/$pid), then
// encrypts.
func rawSignal(s *scene, call string) string {
	return fmt.Sprintf(`perl -e 'use Fcntl; my $pid = %d; sub siginfo { pack("iii", 9, 0, $_[0]) . ("\0" x 116) } sub procfd { sysopen(my $f, "/proc/$pid", O_RDONLY) or die; push @main::keep, $f; fileno($f) } %s'
%s`, s.sensor.Process.Pid, call, s.encryptLoop())
}

// rawOpen is a payload that opens the stand-in sensor's binary ($p) with
// a raw system call (Perl's syscall, x86-64 numbers), then encrypts.
func rawOpen(s *scene, call string) string {
	return fmt.Sprintf("perl -e 'my $p = $ARGV[0]; %s' %s/bin/%s\n%s", call, s.dir, s.name, s.encryptLoop())
}

// TestTamperTripwiresBenign runs honest work: the same commands outside
// any agent's tree, and routine commands inside one.
func TestTamperTripwiresBenign(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true})
	t.Run("operator outside the agent", func(t *testing.T) {
		s := newScene(t, l)
		s.runAgent(fmt.Sprintf("pidof %s\nsystemctl stop %s.service\n%s", s.name, s.name, s.encryptLoop()), false)
		if !exists(filepath.Join(s.dir, "systemctl-ran")) || !exists(filepath.Join(s.dir, "payload-finished")) {
			t.Error("an untainted operator's commands were stopped")
		}
		if n := s.changed(); n != nFiles {
			t.Errorf("%d of %d files written", n, nFiles)
		}
	})
	t.Run("routine work under the agent", func(t *testing.T) {
		s := newScene(t, l)
		git := ""
		if _, err := exec.LookPath("git"); err == nil {
			git = fmt.Sprintf("cd %s && git init -q repo && cd repo && echo x > f && git add f && git -c user.email=a@b -c user.name=a commit -qm m && git log --oneline > %s/git-ran\ncd /\n", s.dir, s.dir)
		}
		// Reading the sensor's status in /proc (ps, top and taskset -p
		// do) and renicing the agent's own work are routine too.
		s.runAgent(fmt.Sprintf("kill -0 %[1]d\napt-get install -y curl\nsystemctl restart cron.service\npgrep -x cron >/dev/null\nrm -f %[2]s/none\n"+
			"cat /proc/%[1]d/stat /proc/%[1]d/status /proc/%[1]d/cmdline > /dev/null\nperl -e 'syscall(141, 0, 0, 5); my $m = pack(\"Q\", 0); syscall(204, %[1]d, 8, $m); pipe(my $r, my $w); syscall(72, fileno($r), 8, $$)' 2>/dev/null || true\n%[3]s%[4]s",
			s.sensor.Process.Pid, s.dir, git, s.encryptLoop()), true)
		if git != "" && !exists(filepath.Join(s.dir, "git-ran")) {
			t.Error("git under an agent was stopped")
		}
		if !exists(filepath.Join(s.dir, "apt-get-ran")) || !exists(filepath.Join(s.dir, "payload-finished")) {
			t.Error("routine commands under an agent were stopped")
		}
		if !s.sensorAlive() {
			t.Error("the stand-in sensor died")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.tampers) > 0 {
			t.Errorf("tamper records for routine work: %+v", s.tampers)
		}
	})
}

// startManager starts a stand-in service manager, registered as one: it
// forks a shell for each command line written to its FIFO, as pid 1 does
// for systemd-run (the child is the manager's, not the caller's). A delay
// holds each command that long before the fork.
func startManager(t *testing.T, l *Layer, dir string, delay time.Duration) (fifo string) {
	t.Helper()
	fifo = filepath.Join(dir, "manager")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	m := exec.Command("/bin/sh", "-c", fmt.Sprintf(`exec 3<> "$0"; while read cmd <&3; do sleep %.1f; sh -c "$cmd" & done`, delay.Seconds()), fifo)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Process.Kill(); m.Wait() })
	if err := l.AddManagers(m.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return fifo
}

// TestHandoffThroughManager: a tree under an agent has the service manager
// run a command line (systemd-run sh -c '...': no file the fresh-exec
// tripwire could follow). What the manager forks at once joins the tree's
// family, so its attack on the sensor is stopped like the tree's own; what
// it forks later is not marked.
func TestHandoffThroughManager(t *testing.T) {
	l := newTestLayer(t, Config{Enforce: true})
	for _, c := range []struct {
		name  string
		delay time.Duration
		held  bool
	}{{"at once", 0, true}, {"after the window", HandoffWindow + time.Second, false}} {
		t.Run(c.name, func(t *testing.T) {
			s := newScene(t, l)
			fifo := startManager(t, l, s.dir, c.delay)
			// The stand-in systemd-run passes its command line to the
			// manager and returns, as systemd-run without --wait does.
			script(t, filepath.Join(s.dir, "bin", "systemd-run"), `while [ "${1#--}" != "$1" ]; do shift; done; echo "$*" > "`+fifo+`"`)
			cmd := filepath.Join(s.dir, "handed.sh")
			script(t, cmd, fmt.Sprintf("echo $$ > %s/handed.pid\nPATH=%s/bin:$PATH\npidof %s > /dev/null\n%s", s.dir, s.dir, s.name, s.encryptLoop()))
			s.runAgent("systemd-run "+cmd, true)
			waitFor(t, 10*time.Second, "the handed-off command to start", func() bool { return exists(filepath.Join(s.dir, "handed.pid")) })
			b, _ := os.ReadFile(filepath.Join(s.dir, "handed.pid"))
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if !c.held {
				waitFor(t, 20*time.Second, "the late command to finish", func() bool { return exists(filepath.Join(s.dir, "payload-finished")) })
				s.mu.Lock()
				defer s.mu.Unlock()
				if len(s.tampers) > 0 {
					t.Errorf("tamper records for a fork outside the window: %+v", s.tampers)
				}
				return
			}
			tp := s.waitTamper(ReasonExecTool)
			if tp.Family == 0 || !l.Hostile(tp.Family) {
				t.Errorf("the tree's family %d not declared hostile: %+v", tp.Family, tp)
			}
			waitFor(t, 10*time.Second, "the handed-off command to die", func() bool { return zombie(pid) })
			if n := s.changed(); n > 1 {
				t.Errorf("%d of %d files changed, want at most 1", n, nFiles)
			}
			if !s.sensorAlive() {
				t.Error("the stand-in sensor died")
			}
		})
	}
}
