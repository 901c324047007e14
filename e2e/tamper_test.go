package e2e

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// roleEnv makes the test binary play a part in a scene instead of running
// tests (TestMain reads it first): "encrypt" is the payload's encryptor.
const roleEnv = "TILLWATCH_E2E_ROLE"

// runRole plays the part named by role with args; it returns the exit code.
func runRole(role string, args []string) int {
	switch role {
	case "encrypt":
		if err := encryptRole(args); err != nil {
			fmt.Fprintln(os.Stderr, "encrypt:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown role\n", roleEnv, role)
	return 2
}

// encryptRole is the payload's encryptor: it records its pid, optionally
// SIGKILLs the sensor itself (--kill PIDFILE) or waits until the sensor is
// dead (--after-death PIDFILE), then encrypts every file of DIR in place
// with AES-CTR as fast as four workers go, and writes DIR/../enc-finished.
func encryptRole(args []string) error {
	var kill, after string
	for len(args) > 1 && strings.HasPrefix(args[0], "--") {
		switch args[0] {
		case "--kill":
			kill = args[1]
		case "--after-death":
			after = args[1]
		default:
			return fmt.Errorf("unknown flag %s", args[0])
		}
		args = args[2:]
	}
	if len(args) != 1 {
		return fmt.Errorf("usage: [--kill PIDFILE | --after-death PIDFILE] DIR")
	}
	dir := args[0]
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "enc.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	if kill != "" {
		pid, err := readPID(kill)
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	if after != "" {
		pid, err := readPID(after)
		if err != nil {
			return err
		}
		// stat, not kill(pid, 0): the encryptor waits without a syscall
		// the tripwires look at.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				b, err := os.ReadFile(p)
				if err != nil {
					continue
				}
				iv := make([]byte, aes.BlockSize)
				cipher.NewCTR(block, iv).XORKeyStream(b, b)
				_ = os.WriteFile(p, b, 0o644)
			}
		}()
	}
	for _, de := range des {
		if de.Type().IsRegular() {
			work <- filepath.Join(dir, de.Name())
		}
	}
	close(work)
	wg.Wait()
	return os.WriteFile(filepath.Join(filepath.Dir(dir), "enc-finished"), nil, 0o644)
}

func readPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// tamperFiles is the size of the guarded folder.
const tamperFiles = 1000

// tamperScene is one host under attack: a real collector (shared by the
// scenes of a test), a real sensor in enforce mode with the kernel layer
// required and a pin dir of its own, restarted by a supervisor 5 s after
// it dies; a stand-in RMM agent of a product only this run's catalog knows
// (a copy of sh, approved, as the Kaseya agent was); a guarded folder of
// 1,000 files and their digests.
type tamperScene struct {
	t        *testing.T
	work     string
	folder   string
	hostID   string
	pinDir   string
	pidFile  string
	binDir   string // stand-in tools, first on the agent's PATH
	product  string
	agentExe string
	agent    *exec.Cmd
	agentIn  io.WriteCloser
	digests  map[string][32]byte
	sup      *supervisor
}

// newTamperScene prepares the folder, the catalog and the agent, then
// starts the sensor and waits until it has marked the agent in the kernel.
func newTamperScene(t *testing.T, c *collector, enrollTok string) *tamperScene {
	t.Helper()
	id := randHex(t, 4)
	s := &tamperScene{t: t, work: t.TempDir(), hostID: "e2e-tamper-" + id, product: "tw-tamper-" + id,
		pinDir: "/sys/fs/bpf/tillwatch-e2e-" + id}
	t.Cleanup(func() {
		if err := kernel.Release(s.pinDir); err != nil {
			t.Errorf("release pins %s: %v", s.pinDir, err)
		}
	})
	s.folder = filepath.Join(s.work, "shop", "data")
	s.pidFile = filepath.Join(s.work, "sensor.pid")
	s.digests = map[string][32]byte{}
	buf := make([]byte, 4096)
	for i := range tamperFiles {
		rand.Read(buf)
		name := fmt.Sprintf("receipt-%04d.dat", i)
		writeFile(t, filepath.Join(s.folder, name), string(buf))
		s.digests[name] = sha256.Sum256(buf)
	}
	// The stand-in agent: known to the sensor by this run's catalog only,
	// so no other sensor on the machine takes it for an agent.
	agentDir := filepath.Join(s.work, "opt", s.product)
	s.agentExe = filepath.Join(agentDir, s.product)
	copyExe(t, "/bin/sh", s.agentExe)
	rules := filepath.Join(s.work, "rules")
	writeFile(t, filepath.Join(rules, "rmm", "catalog.yaml"), fmt.Sprintf(`products:
  - id: %s
    name: tillwatch e2e tamper agent
    vendor: tillwatch tests
    kind: rmm
    linux: {processes: [%s], paths: [%s/]}
`, s.product, s.product, agentDir))
	// Stand-in service tools: each leaves a mark; one that names the
	// sensor kills this scene's sensor (and only it) by pid, as the real
	// ones would.
	s.binDir = filepath.Join(s.work, "bin")
	for _, tool := range []string{"systemctl", "pkill", "killall"} {
		writeFile(t, filepath.Join(s.binDir, tool), fmt.Sprintf("#!/bin/sh\necho \"$0 $*\" >> %s/tools-ran\ncase \"$*\" in *tillwatch*) kill -9 $(cat %s);; esac\n", s.work, s.pidFile))
		if err := os.Chmod(filepath.Join(s.binDir, tool), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(s.work, "sensor.yaml")
	writeFile(t, cfg, fmt.Sprintf("kernel: {mode: required, pin_dir: %s}\nrmm: {approved: [%s]}\nyara: {enabled: false}\nmetrics: {listen: \"\"}\n", s.pinDir, s.product))

	// The agent runs before the sensor starts, as on a till; it waits for
	// its job on stdin, runs it, and says it is still alive after.
	s.agent = exec.Command(s.agentExe, "-c", `read job; /bin/sh "$job"; echo alive > "$0"; read end`, filepath.Join(s.work, "agent-alive"))
	s.agent.Dir = s.work
	s.agent.Env = append(os.Environ(), "PATH="+s.binDir+":"+os.Getenv("PATH"), roleEnv+"=encrypt")
	var err error
	if s.agentIn, err = s.agent.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { s.agent.Wait(); close(agentDone) }()
	t.Cleanup(func() {
		s.agentIn.Close()
		select {
		case <-agentDone:
		case <-time.After(10 * time.Second):
			s.agent.Process.Kill()
			<-agentDone
		}
	})

	args := []string{"run", "-c", cfg, "--collector", c.url, "--ca", c.ca, "--enroll-token", enrollTok,
		"--state-dir", filepath.Join(s.work, "state"), "--spool", filepath.Join(s.work, "spool"),
		"--host-id", s.hostID, "--watch", filepath.Dir(s.folder), "--alerts-out", filepath.Join(s.work, "alerts.ndjson"),
		"--mode", "enforce", "--rules", rules, "--log-level", "info"}
	s.sup = superviseSensor(t, args, s.pidFile, 5*time.Second)
	marked := fmt.Sprintf("pid=%d ", s.agent.Process.Pid)
	eventually(t, 60*time.Second, "the sensor armed, its process source running and the agent marked in the kernel", func() bool {
		out := s.sup.output()
		if !strings.Contains(out, "kernel layer armed") || !strings.Contains(out, "process source running") {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "RMM agent marked in the kernel") && strings.Contains(line+" ", marked) {
				return true
			}
		}
		return false
	})
	return s
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// job hands the agent a script to run (an RMM procedure) and waits until
// the agent says it survived it.
func (s *tamperScene) job(script string) {
	t := s.t
	p := filepath.Join(s.work, "job.sh")
	writeFile(t, p, "#!/bin/sh\nexec >>"+filepath.Join(s.work, "job.log")+" 2>&1\nset -x\n"+script+"\n")
	fmt.Fprintln(s.agentIn, p)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.work, "job.log"))
			t.Logf("--- job log ---\n%s", b)
			for _, pid := range descendants(s.agent.Process.Pid) {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				t.Logf("below the agent: %s", st)
			}
			b, _ = os.ReadFile(filepath.Join(s.work, "alerts.ndjson"))
			for _, a := range jsonLines(t, string(b)) {
				t.Logf("alert %v %v: %v", get(a, "rule.id"), get(a, "tillwatch.response"), get(a, "message"))
			}
		}
	})
	eventually(t, 60*time.Second, "the agent to finish the job", func() bool {
		_, err := os.Stat(filepath.Join(s.work, "agent-alive"))
		return err == nil
	})
}

// enc is the command line that runs the encryptor on the folder.
func (s *tamperScene) enc(flags ...string) string {
	self, err := os.Executable()
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.Join(append(append([]string{self}, flags...), s.folder), " ")
}

// changed counts the folder's files that are missing or differ.
func (s *tamperScene) changed() int {
	n := 0
	for name, want := range s.digests {
		b, err := os.ReadFile(filepath.Join(s.folder, name))
		if err != nil || sha256.Sum256(b) != want {
			n++
		}
	}
	return n
}

// attackerGone waits until every pid the attack recorded is gone and no
// process but the agent runs below the agent.
func (s *tamperScene) attackerGone() {
	t := s.t
	var pids []int
	for _, f := range []string{"payload.pid", "enc.pid"} {
		if pid, err := readPID(filepath.Join(s.work, f)); err == nil {
			pids = append(pids, pid)
		}
	}
	eventually(t, 30*time.Second, fmt.Sprintf("the attacker's processes %v and every descendant of the agent gone", pids), func() bool {
		for _, pid := range pids {
			if alive(pid) {
				return false
			}
		}
		return len(descendants(s.agent.Process.Pid)) == 0
	})
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// descendants lists the live processes below pid.
func descendants(pid int) []int {
	parent := map[int]int{}
	des, _ := os.ReadDir("/proc")
	for _, de := range des {
		p, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + de.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		parent[p], _ = strconv.Atoi(f[1])
	}
	var out []int
	for p := range parent {
		for q, n := parent[p], 0; q > 1 && n < 64; q, n = parent[q], n+1 {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// supervisor runs the sensor like a service manager, restarting it a
// fixed delay after it dies (systemd does after 1 s; 5 s is the slower
// case the attack must not profit from).
type supervisor struct {
	t       *testing.T
	args    []string
	pidFile string
	delay   time.Duration

	mu       sync.Mutex
	cur      *proc
	outs     []*proc
	deaths   int
	stopping bool
	stop     chan struct{}
	done     chan struct{}
}

func superviseSensor(t *testing.T, args []string, pidFile string, delay time.Duration) *supervisor {
	s := &supervisor{t: t, args: args, pidFile: pidFile, delay: delay, stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.launch(); err != nil {
		t.Fatal(err)
	}
	go s.loop()
	t.Cleanup(func() {
		s.shutdown()
		if t.Failed() {
			t.Logf("--- tillwatch-sensor output ---\n%s", s.output())
		}
	})
	return s
}

func (s *supervisor) launch() error {
	p := &proc{cmd: exec.Command(bin("tillwatch-sensor"), s.args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.cur = p
	s.outs = append(s.outs, p)
	s.mu.Unlock()
	return os.WriteFile(s.pidFile, []byte(strconv.Itoa(p.cmd.Process.Pid)), 0o644)
}

func (s *supervisor) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		p := s.cur
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-p.done:
		}
		s.mu.Lock()
		s.deaths++
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-time.After(s.delay):
		}
		if err := s.launch(); err != nil {
			s.t.Errorf("restart the sensor: %v", err)
			return
		}
	}
}

// shutdown stops supervising and stops the sensor cleanly (SIGTERM).
func (s *supervisor) shutdown() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	p.stop()
}

// current is the sensor process running now (or last).
func (s *supervisor) current() *proc { s.mu.Lock(); defer s.mu.Unlock(); return s.cur }

// runs is how many times the sensor was started.
func (s *supervisor) runs() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.outs) }

// died reports how often the sensor died.
func (s *supervisor) died() int { s.mu.Lock(); defer s.mu.Unlock(); return s.deaths }

// running reports whether a sensor process runs now.
func (s *supervisor) running() bool {
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (s *supervisor) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for i, p := range s.outs {
		fmt.Fprintf(&b, "=== run %d (pid %d) ===\n%s", i+1, p.cmd.Process.Pid, p.output())
	}
	return b.String()
}

// collectorAlerts returns the alerts of host with rule id rule at the collector.
func collectorAlerts(t *testing.T, c *collector, tok, host, rule string) []map[string]any {
	t.Helper()
	r := c.cli(t, tok, "alerts", "--json", "--host", host, "--rule", rule, "--since", "30m")
	if r.code != 0 {
		t.Logf("tillwatch alerts: exit %d: %s", r.code, r.stderr)
		return nil
	}
	return jsonLines(t, r.stdout)
}

// TestTamperThenEncrypt is the attack the kernel layer exists for, with
// real processes: a job pushed through a stand-in RMM agent switches the
// real sensor off (SIGKILL by pid, systemctl/pkill/killall, or a payload
// decoded from base64 first) and then encrypts the guarded folder of 1,000
// files at full speed. A supervisor restarts a dead sensor after 5 s. At
// most one file may change, the attacker's processes must be dead and the
// tamper alert must reach the collector.
func TestTamperThenEncrypt(t *testing.T) {
	requireRoot(t)
	work := t.TempDir()
	c := startCollector(t, filepath.Join(work, "collector"), freeAddr(t))
	enroll := c.tokenFile(t, "sensor", work)
	analyst := c.tokenFile(t, "analyst", work)

	// payload is the shell script the attacker runs under the agent.
	killThenEncrypt := func(s *tamperScene) string {
		return fmt.Sprintf("echo $$ > %s/payload.pid\nkill -9 $(cat %s)\n%s\necho finished > %s/payload-finished",
			s.work, s.pidFile, s.enc(), s.work)
	}
	cases := []struct {
		name       string
		job        func(s *tamperScene) string
		rule       string // the tamper alert expected at the collector
		sensorDies bool   // the signal lands; the supervisor restarts it
		// orDecode: the sensor's RMM decode rule (TW-RMM-0101, kill) may
		// stop the chain before the payload runs; then that alert is
		// expected instead, and the sensor lives.
		orDecode bool
	}{
		{"encryptor kills the sensor by pid then encrypts", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\nexec %s", s.work, s.enc("--kill", s.pidFile))
		}, kernel.RuleSignal, true, false},
		{"shell kills the sensor by pid then encrypts", killThenEncrypt, kernel.RuleSignal, true, false},
		{"encryptor forked before the kill waits for the sensor to die", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\n%s &\nkill -9 $(cat %s)\nwait", s.work, s.enc("--after-death", s.pidFile), s.pidFile)
		}, kernel.RuleSignal, true, false},
		{"systemctl stop tillwatch-sensor then encrypt", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\nsystemctl stop tillwatch-sensor\n%s", s.work, s.enc())
		}, kernel.RuleToolExec, false, false},
		{"pkill -9 tillwatch-sensor then encrypt", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\npkill -9 tillwatch-sensor\n%s", s.work, s.enc())
		}, kernel.RuleToolExec, false, false},
		{"killall -9 tillwatch-sensor then encrypt", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\nkillall -9 tillwatch-sensor\n%s", s.work, s.enc())
		}, kernel.RuleToolExec, false, false},
		// Signals by ways kill(2)'s tripwire never saw: a pidfd made by
		// opening /proc/PID (one line of Python), and a stop instead of
		// a kill (nothing restarts a stopped sensor; it continues
		// itself).
		{"pidfd from /proc kills the sensor then encrypts", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\npython3 -c \"import os, signal; signal.pidfd_send_signal(os.open('/proc/' + open('%s').read().strip(), os.O_RDONLY), 9)\"\n%s",
				s.work, s.pidFile, s.enc())
		}, kernel.RuleSignal, true, false},
		{"SIGSTOP the sensor then encrypt", func(s *tamperScene) string {
			return fmt.Sprintf("echo $$ > %s/payload.pid\nkill -STOP $(cat %s)\n%s", s.work, s.pidFile, s.enc())
		}, kernel.RuleSignal, false, false},
		{"payload decoded from base64 kills then encrypts", func(s *tamperScene) string {
			cert := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\n" + killThenEncrypt(s) + "\n"))
			return fmt.Sprintf("cd %[1]s\necho %[2]s > agent.crt\nbase64 -d agent.crt > agent.sh\nchmod +x agent.sh\n./agent.sh", s.work, cert)
		}, kernel.RuleSignal, true, true},
		{"payload decoded from base64 through a pipe kills then encrypts", func(s *tamperScene) string {
			// Decoding into a pipe is meant to get past the RMM decode rule
			// (an attacker who knows it); with the kernel process feed the
			// rule may still see "base64 -d FILE" under the agent and kill
			// first. Either way the kernel stands behind it.
			cert := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\n" + killThenEncrypt(s) + "\n"))
			return fmt.Sprintf("cd %[1]s\necho %[2]s > agent.crt\nbase64 -d agent.crt | cat > agent.sh\nchmod +x agent.sh\n./agent.sh", s.work, cert)
		}, kernel.RuleSignal, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTamperScene(t, c, enroll)
			start := time.Now()
			s.job(tc.job(s))
			s.attackerGone()
			rule := tc.rule
			var tamper []map[string]any
			if tc.orDecode {
				// The tamper alert, or the decode rule's kill with a sensor
				// that lived: decided once a death would have been seen
				// (a dying sensor takes a moment to be reaped) and the
				// restarted one would have shipped.
				jobEnd := time.Now()
				eventually(t, 90*time.Second, tc.rule+", or TW-RMM-0101 and a sensor that lived, at the collector", func() bool {
					if tamper = collectorAlerts(t, c, analyst, s.hostID, tc.rule); len(tamper) > 0 {
						return true
					}
					if tamper = collectorAlerts(t, c, analyst, s.hostID, kernel.RuleUnreported); len(tamper) > 0 {
						return true
					}
					if time.Since(jobEnd) < 15*time.Second || s.sup.died() > 0 {
						return false
					}
					tamper = collectorAlerts(t, c, analyst, s.hostID, "TW-RMM-0101")
					return len(tamper) > 0
				})
				if get(tamper[0], "rule.id") == "TW-RMM-0101" {
					rule, tc.sensorDies = "TW-RMM-0101", false
				}
			}
			// A sensor killed between reading the tripwire's record from
			// the ring and journaling its alert loses that alert (a known
			// limit, docs/kernel.md); its next run still reports the
			// unclean stop, which then stands in for it.
			jobEnd := time.Now()
			eventually(t, 90*time.Second, rule+" (or "+kernel.RuleUnreported+") at the collector", func() bool {
				if tamper = collectorAlerts(t, c, analyst, s.hostID, rule); len(tamper) > 0 {
					return true
				}
				// The killed sensor read the record but did not live to
				// journal it: its next run reports the attack from the
				// kernel's hostile families (same alert id).
				if tc.sensorDies && rule != "TW-RMM-0101" {
					if tamper = collectorAlerts(t, c, analyst, s.hostID, kernel.RuleUnreported); len(tamper) > 0 {
						t.Logf("%s reported at the restart as %s", rule, kernel.RuleUnreported)
						rule = kernel.RuleUnreported
						return true
					}
				}
				if tc.sensorDies && rule != "TW-RMM-0101" && time.Since(jobEnd) > 45*time.Second {
					if unclean := collectorAlerts(t, c, analyst, s.hostID, "TW-SENS-0001"); len(unclean) > 0 {
						t.Logf("KNOWN LIMIT: %s lost with the killed sensor; TW-SENS-0001 reported the kill", rule)
						rule, tamper = "TW-SENS-0001", unclean
						return true
					}
				}
				return false
			})
			n := s.changed()
			t.Logf("%d of %d files changed; sensor died %d times; %s at the collector %s after the job", n, tamperFiles, s.sup.died(), rule, time.Since(start).Round(time.Millisecond))
			if rule == "TW-RMM-0101" {
				if got := get(tamper[0], "tillwatch.response.action"); got != "kill" {
					t.Errorf("TW-RMM-0101 response %v, want kill", got)
				}
			}
			if n > 1 {
				t.Errorf("%d of %d files changed, want at most 1", n, tamperFiles)
			}
			for _, f := range []string{"enc-finished", "payload-finished", "tools-ran"} {
				if _, err := os.Stat(filepath.Join(s.work, f)); err == nil {
					t.Errorf("%s exists: the attack ran further than it may", f)
				}
			}
			if tc.sensorDies {
				if s.sup.died() == 0 {
					t.Error("the sensor did not die, yet the signal was sent")
				}
				eventually(t, 60*time.Second, "the restarted sensor running", s.sup.running)
			} else if s.sup.died() != 0 {
				t.Errorf("the sensor died %d times; the tool should have been killed before it ran", s.sup.died())
			} else {
				// Alive is not enough: a stopped sensor is blind.
				pid, _ := os.ReadFile(s.pidFile)
				eventually(t, 20*time.Second, "the sensor running (not stopped)", func() bool {
					st, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
					i := strings.LastIndexByte(string(st), ')')
					return err == nil && i > 0 && i+2 < len(st) && st[i+2] != 'T' && st[i+2] != 't'
				})
			}
			if got := get(tamper[0], "event.kind"); got != "alert" {
				t.Errorf("event.kind = %v", got)
			}
			if got := get(tamper[0], "threat.technique.id"); strings.HasPrefix(rule, "TW-TAMPER-") && fmt.Sprint(got) != "[T1562.001]" {
				t.Errorf("threat.technique.id = %v, want [T1562.001]", got)
			}
		})
	}
}

// tamperAlertsAbout returns the alerts in the scene's --alerts-out that
// are tamper alerts, or responses that stopped or killed something, about
// this scene's processes (the sensor sees the whole machine; other tests'
// processes are not this scene's business).
func (s *tamperScene) alertsAbout() (tamper, stops []map[string]any) {
	b, _ := os.ReadFile(filepath.Join(s.work, "alerts.ndjson"))
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, s.work) && !strings.Contains(line, `"pid":`+itoa(s.agent.Process.Pid)) {
			continue
		}
		for _, a := range jsonLines(s.t, line) {
			if id, _ := get(a, "rule.id").(string); strings.HasPrefix(id, "TW-TAMPER-") {
				tamper = append(tamper, a)
			}
			if act := get(a, "tillwatch.response.action"); act == "kill" || act == "suspend" {
				stops = append(stops, a)
			}
		}
	}
	return tamper, stops
}

// TestTamperBenign: honest work with the kernel layer armed in enforce
// mode is never stopped. The approved agent downloads an installer from a
// loopback web server and runs it (it restarts a service and cleans up
// with the tools the tripwires watch), git is used under the agent and by
// the operator, and the operator stops the sensor the documented way
// (`systemctl stop tillwatch-sensor` from a shell that no agent started;
// here a stand-in systemctl that does what systemd does: SIGTERM). Nothing
// is killed, no tamper alert is raised, the stop is clean (exit 0, no
// unclean-stop report at the next start).
func TestTamperBenign(t *testing.T) {
	requireRoot(t)
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	work := t.TempDir()
	c := startCollector(t, filepath.Join(work, "collector"), freeAddr(t))
	enroll := c.tokenFile(t, "sensor", work)
	analyst := c.tokenFile(t, "analyst", work)
	s := newTamperScene(t, c, enroll)

	// The vendor's download server on loopback: an installer that puts a
	// program in place the way installers do.
	app := filepath.Join(s.work, "opt", "pos-app")
	installer := fmt.Sprintf(`#!/bin/sh
set -e
mkdir -p %[1]s/bin %[1]s/etc
cp /bin/true %[1]s/bin/pos-app.new
chmod 755 %[1]s/bin/pos-app.new
mv %[1]s/bin/pos-app.new %[1]s/bin/pos-app
ln -sf %[1]s/bin/pos-app %[1]s/pos-app
echo 'listen: 127.0.0.1:9000' > %[1]s/etc/pos-app.yaml
systemctl daemon-reload
systemctl restart pos-app.service
pkill -HUP -x pos-app-nonexistent || true
kill -0 $(cat %[2]s)
%[1]s/bin/pos-app
rm -f %[1]s/bin/pos-app.old
echo installed > %[1]s/installed
`, app, s.pidFile)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pos-app/install.sh" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, installer)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	repo := filepath.Join(s.work, "repo")
	gitCmds := func(dir, who string) string {
		return fmt.Sprintf("%[1]s init -q %[2]s && cd %[2]s && echo %[3]s > README && %[1]s add README && "+
			"%[1]s -c user.email=%[3]s@example.org -c user.name=%[3]s commit -qm 'first commit by %[3]s' && %[1]s log --oneline > %[2]s.log && cd %[4]s",
			git, dir, who, s.work)
	}
	s.job(fmt.Sprintf("set -e\ncd %[1]s\n%[2]s -fsS -o install.sh http://%[3]s/pos-app/install.sh\nchmod +x install.sh\n./install.sh\n%[4]s\necho done > %[1]s/job-done",
		s.work, curl, ln.Addr(), gitCmds(repo+"-agent", "agent")))
	for _, f := range []string{filepath.Join(app, "installed"), filepath.Join(s.work, "job-done"), repo + "-agent.log"} {
		if _, err := os.Stat(f); err != nil {
			b, _ := os.ReadFile(filepath.Join(s.work, "job.log"))
			t.Fatalf("the agent's routine job did not finish (%v):\n%s", err, b)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(s.work, "tools-ran")); !strings.Contains(string(b), "restart pos-app.service") {
		t.Errorf("the installer's systemctl did not run: %q", b)
	}

	// The operator, in a shell no agent started: git, then the clean stop.
	op := exec.Command("/bin/sh", "-c", gitCmds(repo+"-operator", "operator")+" && systemctl stop tillwatch-sensor")
	op.Env = append(os.Environ(), "PATH="+s.binDir+":"+os.Getenv("PATH"))
	// The stand-in systemctl stops the unit as systemd does: SIGTERM.
	writeFile(t, filepath.Join(s.binDir, "systemctl"), fmt.Sprintf("#!/bin/sh\necho \"$0 $*\" >> %s/tools-ran\n[ \"$1\" = stop ] && kill -TERM $(cat %s)\nexit 0\n", s.work, s.pidFile))
	first := s.sup.current()
	if out, err := op.CombinedOutput(); err != nil {
		t.Fatalf("the operator's shell: %v\n%s", err, out)
	}
	select {
	case <-first.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the sensor did not stop within 60 s of the operator's clean stop")
	}
	if first.err != nil {
		t.Errorf("clean stop: the sensor ended with %v, want exit 0", first.err)
	}
	if _, err := os.Stat(repo + "-operator.log"); err != nil {
		t.Errorf("the operator's git did not finish: %v", err)
	}
	// The supervisor starts it again (a unit would stay stopped); the new
	// run must not take the clean stop for an unclean one.
	eventually(t, 60*time.Second, "the sensor running again", func() bool {
		return s.sup.runs() == 2 && strings.Contains(s.sup.current().output(), "process source running")
	})
	if s.sup.died() != 1 {
		t.Errorf("the sensor ended %d times, want once (the operator's stop)", s.sup.died())
	}
	// A clean stop of the new run drains what its sources emitted (an
	// unclean-stop report is emitted at start), so the file is complete.
	s.sup.shutdown()
	if err := s.sup.current().err; err != nil {
		t.Errorf("second clean stop: %v", err)
	}
	ran, _ := os.ReadFile(filepath.Join(s.work, "tools-ran"))
	t.Logf("honest work done: installer, git under the agent and by the operator; tools run: %q", ran)
	tamper, stops := s.alertsAbout()
	for _, a := range tamper {
		if get(a, "rule.id") == kernel.RuleFreshLet {
			// The record of a deployment the fresh-exec judgement let go
			// (severity 10, no response): honest work, written down.
			t.Logf("deployment let go: %v", get(a, "message"))
			continue
		}
		t.Errorf("tamper alert for honest work: %v %v", get(a, "rule.id"), get(a, "message"))
	}
	for _, a := range stops {
		t.Errorf("honest work stopped: %v %v: %v", get(a, "rule.id"), get(a, "tillwatch.response"), get(a, "message"))
	}
	b, _ := os.ReadFile(filepath.Join(s.work, "alerts.ndjson"))
	for _, a := range jsonLines(t, string(b)) {
		if get(a, "rule.id") == "TW-SENS-0001" && get(a, "host.id") == s.hostID {
			t.Errorf("the operator's clean stop was reported as unclean: %v", get(a, "message"))
		}
	}
	for _, rule := range []string{kernel.RuleSignal, kernel.RuleToolExec, kernel.RulePath, kernel.RulePidfd, kernel.RuleSurvivor} {
		if got := collectorAlerts(t, c, analyst, s.hostID, rule); len(got) > 0 {
			t.Errorf("%s at the collector for honest work: %v", rule, get(got[0], "message"))
		}
	}
	if !alive(s.agent.Process.Pid) {
		t.Error("the agent died")
	}
}
