package rmm

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// fakeHost answers the detector's OS questions from maps, so the rules'
// logic is tested without processes, timing or root.
type fakeHost struct {
	stdout map[int64]string  // pid -> fd 1 target; absent: the process is gone
	digest map[string]string // pid as "pid:N" or a path -> sha256
	mode   map[string]fs.FileMode
}

func (h *fakeHost) Stdout(pid int64) (string, error) {
	if t, ok := h.stdout[pid]; ok {
		return t, nil
	}
	return "", fs.ErrNotExist
}

func (h *fakeHost) Digest(pid int64, file string) (string, int64, error) {
	if s, ok := h.digest["pid:"+strconv.FormatInt(pid, 10)]; ok && pid > 0 {
		return s, 1000, nil
	}
	if s, ok := h.digest[file]; ok {
		return s, 1000, nil
	}
	return "", 0, fs.ErrNotExist
}

func (h *fakeHost) Stat(path string) (fs.FileInfo, error) {
	if m, ok := h.mode[path]; ok {
		return fakeInfo{m}, nil
	}
	return nil, fs.ErrNotExist
}

type fakeInfo struct{ mode fs.FileMode }

func (fakeInfo) Name() string        { return "x" }
func (fakeInfo) Size() int64         { return 1000 }
func (i fakeInfo) Mode() fs.FileMode { return i.mode }
func (fakeInfo) ModTime() time.Time  { return time.Time{} }
func (i fakeInfo) IsDir() bool       { return i.mode.IsDir() }
func (fakeInfo) Sys() any            { return nil }

// fakeTable is the process table: pid -> its ancestors, nearest first.
type fakeTable map[int][]proctree.Proc

func (t fakeTable) Ancestry(pid int, _ int) []proctree.Proc { return t[pid] }

const agentPID = 100

var agentProc = proctree.Proc{PID: agentPID, Name: "tacticalagent", Executable: "/opt/tacticalagent/tacticalagent"}

func execEv(pid int64, exe, cwd string, args ...string) event.Event {
	name := exe[len(exe)-len(baseName(exe, "")):]
	return event.Event{
		Event:   event.Meta{Kind: event.KindEvent, Action: "exec"},
		Process: &event.Process{PID: pid, Name: name, Executable: exe, Args: append([]string{name}, args...), WorkingDirectory: cwd},
	}
}

// TestRulesOnFakeHost runs each behaviour rule on synthetic exec events
// under a fake agent, with the OS answers given by fakeHost.
func TestRulesOnFakeHost(t *testing.T) {
	t.Parallel()
	underAgent := []proctree.Proc{{PID: 200, Name: "sh", Executable: "/bin/sh"}, agentProc}
	for _, tc := range []struct {
		name  string
		host  fakeHost
		evs   []event.Event
		want  []string // rule ids, in order
		kills bool
	}{
		{"decode into a file, then run it",
			fakeHost{stdout: map[int64]string{300: "/tmp/w/agent.sh"}},
			[]event.Event{execEv(300, "/usr/bin/base64", "/tmp/w", "-d", "agent.crt"), execEv(301, "/tmp/w/agent.sh", "/tmp/w")},
			[]string{"TW-RMM-0101", "TW-RMM-0102"}, true},
		{"decode into a pipe is data handling",
			fakeHost{stdout: map[int64]string{300: "pipe:[1234]"}},
			[]event.Event{execEv(300, "/usr/bin/base64", "/tmp/w", "-d", "agent.crt")},
			nil, false},
		{"decode into a config file is data",
			fakeHost{stdout: map[int64]string{300: "/etc/app/settings.json"}},
			[]event.Event{execEv(300, "/usr/bin/base64", "/tmp/w", "-d", "blob")},
			nil, false},
		{"decoder gone, certificate input",
			fakeHost{},
			[]event.Event{execEv(300, "/usr/bin/base64", "/tmp/w", "-d", "agent.crt")},
			[]string{"TW-RMM-0101"}, true},
		{"decoder gone, plain input",
			fakeHost{},
			[]event.Event{execEv(300, "/usr/bin/base64", "/tmp/w", "-d", "notes")},
			nil, false},
		{"program in a world-writable directory",
			fakeHost{mode: map[string]fs.FileMode{"/srv/drop": fs.ModeDir | 0o777}},
			[]event.Event{execEv(300, "/srv/drop/job", "/srv/drop")},
			[]string{"TW-RMM-0106"}, false},
		{"program in a private directory",
			fakeHost{mode: map[string]fs.FileMode{"/srv/app": fs.ModeDir | 0o755}},
			[]event.Event{execEv(300, "/srv/app/job", "/srv/app")},
			nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table := fakeTable{}
			for _, ev := range tc.evs {
				table[int(ev.Process.PID)] = underAgent
			}
			d, err := New(Options{Catalog: catalog(t), Rules: builtinRules(t), GOOS: "linux", Table: table, Host: &tc.host})
			if err != nil {
				t.Fatal(err)
			}
			var dets []pipeline.Detection
			for i := range tc.evs {
				dets = append(dets, d.Detect(&tc.evs[i])...)
			}
			if got := ruleIDs(dets); !slices.Equal(got, tc.want) {
				t.Fatalf("rules %v, want %v", got, tc.want)
			}
			for _, det := range dets {
				rmm := det.Alert.Tillwatch.RMM
				if rmm == nil || rmm.Product != "tactical-rmm" || rmm.AgentPID != agentPID || rmm.Fingerprint == "" {
					t.Errorf("%s: tillwatch.rmm %+v", det.Alert.Rule.ID, rmm)
				}
				anc := det.Alert.Tillwatch.Process.Ancestry
				if len(anc) != 2 || anc[1].PID != agentPID || det.Alert.Process.Parent == nil || det.Alert.Process.Parent.PID != 200 {
					t.Errorf("%s: ancestry %+v parent %+v", det.Alert.Rule.ID, anc, det.Alert.Process.Parent)
				}
			}
			if tc.kills {
				// The subtree the agent started (pid 200), not the agent.
				if tg := dets[0].Target; dets[0].Response != event.ActionKill || tg == nil || tg.PID != 200 || !tg.Tree {
					t.Errorf("response %q target %+v, want kill of tree 200", dets[0].Response, tg)
				}
			}
		})
	}
}

// TestIntegrityOnFakeHost: an approved agent's running image is checked
// against the baseline; a changed image is an alert unless the agent's own
// update window is open.
func TestIntegrityOnFakeHost(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 7, 2, 12, 0, 0, 0, time.UTC)
	bl, err := rmmcat.OpenBaseline(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	host := &fakeHost{digest: map[string]string{"pid:100": "aaaa"}}
	d, err := New(Options{Catalog: catalog(t), Rules: builtinRules(t), GOOS: "linux", Approved: []string{"tactical-rmm"},
		Table: fakeTable{}, Host: host, Baseline: bl, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	start := func(pid int64, args ...string) []string {
		ev := execEv(pid, agentProc.Executable, "/", args...)
		return ruleIDs(d.Detect(&ev))
	}
	if got := start(100); len(got) != 0 {
		t.Fatalf("first start (baseline recorded): %v", got)
	}
	host.digest = map[string]string{"pid:101": "bbbb"}
	if got := start(101); !slices.Equal(got, []string{"TW-RMM-0003"}) {
		t.Fatalf("changed image outside an update: %v, want TW-RMM-0003", got)
	}
	// The agent runs its updater: the window opens and a new image is taken
	// as the new baseline.
	host.digest = map[string]string{"pid:102": "cccc"}
	if got := start(102, "--update"); len(got) != 0 {
		t.Fatalf("changed image inside the update window: %v", got)
	}
	host.digest = map[string]string{"pid:103": "cccc"}
	now = now.Add(time.Hour)
	if got := start(103); len(got) != 0 {
		t.Fatalf("the updated image after the window: %v", got)
	}
	// Neither the running image nor the file can be read: nothing to compare.
	host.digest = nil
	if got := start(104); len(got) != 0 {
		t.Fatalf("unreadable image: %v", got)
	}
}

// TestProcHostDigestPrefersTheRunningImage: the image a process runs is
// what is checked, the path only when the image cannot be read.
func TestProcHostDigestPrefersTheRunningImage(t *testing.T) {
	t.Parallel()
	h := NewProcHost("/proc", nil)
	self, _, err := h.Digest(int64(os.Getpid()), "/nonexistent")
	if err != nil {
		t.Fatalf("digest of our own image: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	byPath, _, err := h.Digest(0, exe)
	if err != nil || byPath != self {
		t.Errorf("digest by path %q (%v), by image %q", byPath, err, self)
	}
	if _, _, err := h.Digest(1<<30, ""); err == nil {
		t.Error("digest of a pid that does not exist, without a path: no error")
	}
	if _, _, err := h.Digest(0, "/proc"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("digest of a directory: %v, want a not-regular error", err)
	}
}
