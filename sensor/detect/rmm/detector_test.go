package rmm

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// harness runs the real process source (netlink as root, else polling is
// too slow for short-lived children, so the test skips) into one detector
// and records everything it reports.
type harness struct {
	d *Detector

	mu     sync.Mutex
	dets   []pipeline.Detection
	exited map[int64]bool
}

func newHarness(t *testing.T, approved []string, killAgent bool, cat *rmmcat.Catalog) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the process connector follows real processes")
	}
	if cat == nil {
		cat = catalog(t)
	}
	table := proctree.New(proctree.Options{})
	bl, err := rmmcat.OpenBaseline(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Catalog: cat, Rules: builtinRules(t), Approved: approved, KillAgent: killAgent,
		GOOS: runtime.GOOS, Table: table, Baseline: bl})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{d: d, exited: map[int64]bool{}}
	src := process.New(process.Config{Backend: process.BackendNetlink}, table, slog.New(slog.DiscardHandler))
	events := make(chan event.Event, 65536)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		if err := src.Run(ctx, func(ev event.Event) {
			select {
			case events <- ev:
			default:
			}
		}); err != nil {
			t.Errorf("process source: %v", err)
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				dets := d.Detect(&ev)
				h.mu.Lock()
				h.dets = append(h.dets, dets...)
				if ev.Event.Action == process.ActionExit && ev.Process != nil {
					h.exited[ev.Process.PID] = true
				}
				h.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	// The connector needs a moment to subscribe; a probe process tells.
	waitFor(t, 5*time.Second, "process source ready", func() bool {
		c := exec.Command("/bin/true")
		if c.Run() != nil {
			return false
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.exited[int64(c.Process.Pid)]
	})
	return h
}

func waitFor(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func builtinRules(t *testing.T) *Rules {
	t.Helper()
	rs, err := LoadRules(rules.Builtin, "rmm")
	if err != nil {
		t.Fatalf("built-in rules do not load: %v", err)
	}
	return rs
}

func catalog(t *testing.T) *rmmcat.Catalog {
	t.Helper()
	c, err := rmmcat.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agent is a stand-in RMM agent: a copy of /bin/sh under a catalogued name.
type agent struct {
	dir, exe string
}

func newAgent(t *testing.T, name string) *agent {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, name)
	copyFile(t, "/bin/sh", exe, 0o755)
	return &agent{dir: dir, exe: exe}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// run makes the agent interpret script (in its own directory) and waits
// until the detector has seen the agent exit, so every exec below it has
// been evaluated. It returns the agent's pid.
func (h *harness) run(t *testing.T, a *agent, script string, args ...string) int64 {
	t.Helper()
	f := filepath.Join(a.dir, "procedure.sh")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.exe, append([]string{f}, args...)...)
	cmd.Dir = a.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent script failed: %v\n%s", err, out)
	}
	pid := int64(cmd.Process.Pid)
	waitFor(t, 10*time.Second, "the agent's exit to reach the detector", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.exited[pid]
	})
	return pid
}

// below returns the detections about processes below agent pid, or about
// the agent itself.
func (h *harness) about(agentPID int64, exe string) []pipeline.Detection {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []pipeline.Detection
	for _, d := range h.dets {
		a := d.Alert
		if r := a.Tillwatch; r != nil && r.RMM != nil && r.RMM.AgentPID == agentPID && agentPID != 0 {
			out = append(out, d)
			continue
		}
		if a.Process != nil && (a.Process.PID == agentPID || (exe != "" && a.Process.Executable == exe)) {
			out = append(out, d)
		} else if a.File != nil && exe != "" && a.File.Path == exe {
			out = append(out, d)
		}
	}
	return out
}

func ruleIDs(ds []pipeline.Detection) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.Alert.Rule.ID)
	}
	return ids
}

func TestLineageBehaviours(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []string{"tactical-rmm", "meshcentral", "atera"}, false, nil)
	cert := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nsleep 0.2\n"))
	tests := []struct {
		name     string
		script   string
		wantRule string // "" = nothing may be reported
		wantResp string
		check    func(t *testing.T, ds []pipeline.Detection)
	}{
		// Test processes live a little (a slow stdin, a sleep): the process
		// source reads /proc after the exec, and a process that is gone by
		// then has no executable or arguments to judge.
		{"renamed base64 decodes a certificate", "cp /usr/bin/base64 ./certtool\n(sleep 0.2; cat agent.crt) | ./certtool -d > agent.sh\n",
			"TW-RMM-0101", event.ActionKill, func(t *testing.T, ds []pipeline.Detection) {
				if ds[0].Alert.Tillwatch.RMM.EffectiveName != "/usr/bin/base64" {
					t.Errorf("effective name %q, want /usr/bin/base64", ds[0].Alert.Tillwatch.RMM.EffectiveName)
				}
			}},
		{"base64 decodes into a script", "(sleep 0.2; cat agent.crt) | base64 -d > agent.sh\n", "TW-RMM-0101", event.ActionKill, nil},
		{"decoded script is run", "(sleep 0.2; cat agent.crt) | base64 -d > p.sh\nsh ./p.sh\n", "TW-RMM-0101", event.ActionKill,
			func(t *testing.T, ds []pipeline.Detection) {
				if ids := strings.Join(ruleIDs(ds), ","); !strings.Contains(ids, "TW-RMM-0102") {
					t.Errorf("running the decoded file not reported: %s", ids)
				}
			}},
		{"copy of a system binary is run", "cp /usr/bin/dd ./svc-helper\nsleep 0.2 | ./svc-helper of=/dev/null status=none\n", "TW-RMM-0105", event.ActionNone, nil},
		// chmod cannot be slowed down; repeating it gives the source the
		// chance to read one of them.
		{"made executable and run", "cp /bin/sleep ./x\nchmod 0644 ./x\nfor i in $(seq 20); do chmod +x ./x; done\n./x 0.2\n", "TW-RMM-0107", event.ActionNone, nil},
		{"program from a world-writable directory", "mkdir -m 1777 ww\ncp /bin/sleep ww/job\nchmod 1777 ww\nww/job 0.2\n", "TW-RMM-0106", event.ActionNone, nil},
		// killall -w waits for its target: the stand-in "AV" it kills
		// ignores SIGTERM for a moment, so killall lives long enough.
		{"security tooling killed", "cp /bin/sleep ./tillwatch-av$$\n./tillwatch-av$$ 0.3 & sleep 0.05\nkillall -w -s CONT tillwatch-av$$\nwait\n", "TW-RMM-0103", event.ActionKill, nil},
		{"backups deleted", "mkdir -p backup/daily\n(sleep 0.2; echo y) | rm -rI ./backup\n", "TW-RMM-0104", event.ActionKill, nil},
		// False-positive guards: what administration does.
		{"admin script decodes data through a pipe", "echo aGVsbG8= | base64 -d | tr a-z A-Z >/dev/null\n", "", "", nil},
		{"admin script decodes a config file", "echo e30K | base64 > settings.b64\nbase64 -d settings.b64 > settings.json\n", "", "", nil},
		{"admin script lists services", "ls -l /usr/bin/base64 >/dev/null\nid >/dev/null\n", "", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newAgent(t, "tacticalagent")
			if err := os.WriteFile(filepath.Join(a.dir, "agent.crt"), []byte(cert), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(a.dir, "x.b64"), []byte("aGVsbG8="), 0o600); err != nil {
				t.Fatal(err)
			}
			pid := h.run(t, a, tc.script)
			got := h.about(pid, "")
			if tc.wantRule == "" {
				if len(got) != 0 {
					t.Fatalf("administration reported: %v: %s", ruleIDs(got), got[0].Alert.Message)
				}
				return
			}
			if len(got) == 0 {
				t.Fatalf("want %s, got nothing", tc.wantRule)
			}
			d := got[0]
			if d.Alert.Rule.ID != tc.wantRule || d.Response != tc.wantResp {
				t.Fatalf("got %v (%s) response %q, want %s %q", ruleIDs(got), d.Alert.Message, d.Response, tc.wantRule, tc.wantResp)
			}
			checkLineage(t, d, pid, a.exe)
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func checkLineage(t *testing.T, d pipeline.Detection, agentPID int64, agentExe string) {
	t.Helper()
	a := d.Alert
	if a.Rule.Ruleset != event.RulesetRMM || a.Event.Kind != event.KindAlert || len(a.Threat.Technique.ID) == 0 {
		t.Errorf("alert shape: %+v %+v", a.Rule, a.Threat)
	}
	r := a.Tillwatch.RMM
	if r.Product != "tactical-rmm" || !r.Approved || r.AgentPID != agentPID || r.AgentExe != agentExe || len(r.Fingerprint) != 32 {
		t.Errorf("tillwatch.rmm = %+v", r)
	}
	anc := a.Tillwatch.Process.Ancestry
	if len(anc) == 0 || anc[len(anc)-1].PID != agentPID || a.Process.Parent == nil || a.Process.Parent.PID != anc[0].PID {
		t.Errorf("ancestry does not reach the agent: parent %+v, chain %+v", a.Process.Parent, anc)
	}
	if d.Response == event.ActionKill {
		if d.Target == nil || !d.Target.Tree || d.Target.PID == int(agentPID) {
			t.Errorf("kill target %+v: want the tree below the agent, not the agent", d.Target)
		}
	}
}

func TestKillAgentTargetsTheAgent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []string{"tactical-rmm"}, true, nil)
	a := newAgent(t, "tacticalagent")
	if err := os.WriteFile(filepath.Join(a.dir, "agent.crt"), []byte(base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\ntrue\n"))), 0o600); err != nil {
		t.Fatal(err)
	}
	pid := h.run(t, a, "(sleep 0.2; cat agent.crt) | base64 -d > run.sh\nchmod +x run.sh\n./run.sh\n")
	var kills int
	for _, d := range h.about(pid, "") {
		if d.Response == event.ActionKill {
			kills++
			if d.Target == nil || d.Target.PID != int(pid) || !d.Target.Tree {
				t.Errorf("kill_agent: target %+v, want the agent %d and its tree", d.Target, pid)
			}
		}
	}
	if kills == 0 {
		t.Fatalf("decode-and-run not answered with kill: %v", ruleIDs(h.about(pid, "")))
	}
}

func TestPackageUpgradeRunByAgentIsNotReported(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get not installed")
	}
	h := newHarness(t, []string{"tactical-rmm"}, false, nil)
	a := newAgent(t, "tacticalagent")
	lists := filepath.Join(a.dir, "lists")
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(a.dir, "pkg.crt"), []byte("IyEvYmluL3NoCg=="), 0o600); err != nil {
		t.Fatal(err)
	}
	// A real apt-get run whose hook (a child of apt-get, as maintainer
	// scripts are children of dpkg) decodes a file, chmods it and runs it.
	hook := "base64 -d pkg.crt > hook.sh; chmod +x hook.sh; ./hook.sh; cp /usr/bin/tar ./t; ./t --version >/dev/null"
	script := "apt-get -qq -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=/nonexistent -o Dir::State::Lists=" + lists +
		" -o Dir::Cache=" + filepath.Join(a.dir, "cache") + " -o Debug::NoLocking=1 -o 'APT::Update::Pre-Invoke::=" + hook + "' update 2>/dev/null\n"
	pid := h.run(t, a, script)
	if got := h.about(pid, ""); len(got) != 0 {
		t.Fatalf("a package manager run by the agent was reported: %v: %s", ruleIDs(got), got[0].Alert.Message)
	}
}

func TestUnapprovedToolStarts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []string{"tactical-rmm"}, false, nil)
	a := newAgent(t, "anydesk")
	pid := h.run(t, a, "sleep 0.2\n")
	got := h.about(pid, a.exe)
	if len(got) == 0 || got[0].Alert.Rule.ID != "TW-RMM-0001" {
		t.Fatalf("unapproved AnyDesk start: got %v", ruleIDs(got))
	}
	if r := got[0].Alert.Tillwatch.RMM; r.Product != "anydesk" || r.Approved {
		t.Errorf("tillwatch.rmm = %+v", r)
	}
	// The approved agent starting is no alert.
	b := newAgent(t, "tacticalagent")
	pid = h.run(t, b, "sleep 0.2\n")
	if got := h.about(pid, b.exe); len(got) != 0 {
		t.Errorf("approved agent reported: %v", ruleIDs(got))
	}
}

func TestApprovedAgentIntegrity(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []string{"tactical-rmm", "meshcentral", "atera"}, false, nil)

	t.Run("tampered binary", func(t *testing.T) {
		t.Parallel()
		a := newAgent(t, "meshagent")
		h.run(t, a, "sleep 0.2\n") // baseline, first sight
		tamper(t, a.exe)
		pid := h.run(t, a, "sleep 0.2\n")
		got := h.about(pid, a.exe)
		if len(got) == 0 || got[0].Alert.Rule.ID != "TW-RMM-0003" || got[0].Alert.Rule.Ruleset != event.RulesetIntegrity {
			t.Fatalf("tampered agent: got %v", ruleIDs(got))
		}
		if f := got[0].Alert.File; f == nil || f.Path != a.exe || f.Hash == nil || len(f.Hash.SHA256) != 64 {
			t.Errorf("file.* of the integrity alert: %+v", f)
		}
	})
	t.Run("agent updating itself", func(t *testing.T) {
		t.Parallel()
		a := newAgent(t, "ateraagent")
		h.run(t, a, "sleep 0.2\n")
		h.run(t, a, "sleep 0.2\n", "--update") // the agent's own update run
		tamper(t, a.exe)
		pid := h.run(t, a, "sleep 0.2\n")
		if got := h.about(pid, a.exe); len(got) != 0 {
			t.Fatalf("update reported as tampering: %v", ruleIDs(got))
		}
	})
}

// tamper changes the binary but keeps it runnable (sh ignores trailing
// bytes after a NUL? no: appending to an ELF is harmless).
func tamper(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("tampered")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A different mtime second is not needed: the hash cache keys on size.
}

func TestUnapprovedInstallFromScanAndFileEvents(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	exe := filepath.Join(root, "opt/teamviewer/tv_bin/teamviewerd")
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "/bin/true", exe, 0o755)
	cat := catalog(t)
	d, err := New(Options{Catalog: cat, Rules: builtinRules(t), Approved: []string{"tactical-rmm"}, GOOS: "linux", Table: proctree.New(proctree.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	s := &rmmcat.Scanner{Matcher: rmmcat.NewMatcher(cat, "linux"), Root: root}
	var got []pipeline.Detection
	s.Scan(context.Background(), func(ev event.Event) { got = append(got, d.Detect(&ev)...) })
	if len(got) != 1 || got[0].Alert.Rule.ID != "TW-RMM-0002" || got[0].Alert.File.Path != "/opt/teamviewer/tv_bin/teamviewerd" {
		t.Fatalf("scan: %v", ruleIDs(got))
	}
	// The next scan finds the same file: reported once.
	got = nil
	s.Scan(context.Background(), func(ev event.Event) { got = append(got, d.Detect(&ev)...) })
	if len(got) != 0 {
		t.Errorf("repeated finding reported again: %v", ruleIDs(got))
	}
	// A file-activity event (the fanotify source) for another product.
	ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Dataset: event.DatasetFile, Action: "close-write"},
		File: &event.File{Path: "/usr/local/bin/rmmagent"}}
	if got := d.Detect(ev); len(got) != 0 {
		t.Errorf("approved product's file reported as install: %v", ruleIDs(got))
	}
	ev.File.Path = "/usr/libexec/anydesk/anydesk"
	if got := d.Detect(ev); len(got) != 1 || got[0].Alert.Rule.ID != "TW-RMM-0002" {
		t.Errorf("file event: %v", ruleIDs(got))
	}
}

func TestNewRejectsUnknownApprovedNames(t *testing.T) {
	t.Parallel()
	_, err := New(Options{Catalog: catalog(t), Rules: builtinRules(t), Approved: []string{"tactical-rmm", "tacticl"}, GOOS: "linux", Table: proctree.New(proctree.Options{})})
	if err == nil || !strings.Contains(err.Error(), "rmm.approved") || !strings.Contains(err.Error(), "tacticl") {
		t.Errorf("want an error naming rmm.approved and the typo, got %v", err)
	}
}

func TestFingerprintIsStableAcrossHosts(t *testing.T) {
	t.Parallel()
	a := Fingerprint("kaseya-vsa", "base64", []string{"-d", "/tmp/tmp.Xy12ab/agent.crt"})
	b := Fingerprint("kaseya-vsa", "base64", []string{"-d", "/tmp/tmp.Qq98zz/agent.crt"})
	c := Fingerprint("kaseya-vsa", "base64", []string{"-d", "/srv/agent.crt"})
	d := Fingerprint("atera", "base64", []string{"-d", "/tmp/tmp.Xy12ab/agent.crt"})
	if a != b {
		t.Errorf("per-host temp names must not change the fingerprint: %s %s", a, b)
	}
	if a == c || a == d {
		t.Error("different commands or agents must differ")
	}
}
