package kernel

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// fakeTripwires records taints and replays records; the real layer is
// exercised by the *_linux_test.go tests with real processes.
type fakeTripwires struct {
	tainted []int
	stopped []Stopped
	hostile []int
	records []Tamper
	mu      sync.Mutex
	resumed []int
}

func (f *fakeTripwires) Resume(s Stopped, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resumed = append(f.resumed, s.PID)
	return nil
}

func (f *fakeTripwires) TaintAgent(pid int) error            { f.tainted = append(f.tainted, pid); return nil }
func (f *fakeTripwires) TaintChild(int, int) error           { return nil }
func (f *fakeTripwires) Fresh(string) (FreshFile, bool)      { return FreshFile{}, false }
func (f *fakeTripwires) Forget(string) error                 { return nil }
func (f *fakeTripwires) Judged(int) error                    { return nil }
func (f *fakeTripwires) Stopped() ([]Stopped, error)         { return f.stopped, nil }
func (f *fakeTripwires) HostileMembers() ([]int, error)      { return f.hostile, nil }
func (f *fakeTripwires) HostileFamilies() ([]Hostile, error) { return nil, nil }
func (f *fakeTripwires) MarkReported(int) error              { return nil }

func (f *fakeTripwires) RunTamper(_ context.Context, fn func(Tamper)) error {
	for _, r := range f.records {
		fn(r)
	}
	return nil
}

func TestWatchAlerts(t *testing.T) {
	t.Parallel()
	f := &fakeTripwires{
		stopped: []Stopped{{PID: 50, Reason: ReasonDecoyOpen, Name: "0000 Accounts.pdf"}, {PID: 51, Reason: ReasonHandleWrite, Name: "open_by_handle_at"}, {PID: 52, Reason: ReasonIOUring, Name: "io_uring"}},
		hostile: []int{70, 50}, // 50 was stopped by a decoy: judged once
		records: []Tamper{
			{Reason: ReasonDecoyOpen, PID: 50, Name: "0000 Accounts.pdf"}, // the same stop: reported once
			{Reason: ReasonSignal, PID: 60, Target: 7, Signal: 9, Family: 60},
			{Reason: ReasonExecTool, PID: 61, Name: "tillwatch-sensor.service", Family: 60},
			{Reason: ReasonPath, PID: 62, Name: "/etc/tillwatch/sensor.yaml", Family: 60},
			{Reason: ReasonPidfd, PID: 63, Target: 7, Family: 60},
			{Reason: ReasonReach, PID: 64, Target: 7, Family: 60},
			{Reason: ReasonBPF, PID: 65, Signal: 14, Family: 60},
		},
	}
	w := NewWatch(WatchOptions{Layer: f})
	var evs []event.Event
	if err := w.Run(context.Background(), func(e event.Event) { evs = append(evs, e) }); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		pid      int64
		rule     string
		response string
	}{
		{50, RuleDecoy, event.ActionKill},
		{51, RuleHandle, event.ActionKill},
		{52, RuleIOUring, event.ActionKill},
		{70, RuleSurvivor, event.ActionKill},
		{60, RuleSignal, ""},
		{61, RuleToolExec, ""},
		{62, RulePath, ""},
		{63, RulePidfd, ""},
		{64, RuleReach, ""},
		{65, RuleBPF, ""},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w2 := range want {
		ds := w.Detect(&evs[i])
		if len(ds) != 1 {
			t.Fatalf("event %d: %d detections", i, len(ds))
		}
		d := ds[0]
		if d.Alert.Rule == nil || d.Alert.Rule.ID != w2.rule || d.Alert.Process == nil || d.Alert.Process.PID != w2.pid || d.Response != w2.response {
			t.Errorf("event %d: rule %+v pid %v response %q, want %s %d %q", i, d.Alert.Rule, d.Alert.Process, d.Response, w2.rule, w2.pid, w2.response)
		}
		if w2.response != "" && (d.Target == nil || d.Target.PID != int(w2.pid) || !d.Target.Tree) {
			t.Errorf("event %d: target %+v, want the tree of %d", i, d.Target, w2.pid)
		}
	}
}

func TestWatchTaintsAgentsAtExec(t *testing.T) {
	t.Parallel()
	f := &fakeTripwires{}
	w := NewWatch(WatchOptions{Layer: f, IsAgent: func(name, exe string) bool { return name == "agentmon" }})
	for _, p := range []event.Process{{PID: 10, Name: "agentmon", Executable: "/opt/kaseya/agentmon"}, {PID: 11, Name: "bash"}} {
		ev := event.Event{Event: event.Meta{Dataset: event.DatasetProcess, Action: "exec"}, Process: &p}
		if ds := w.Detect(&ev); len(ds) != 0 {
			t.Errorf("exec of %s raised %d alerts", p.Name, len(ds))
		}
	}
	if len(f.tainted) != 1 || f.tainted[0] != 10 {
		t.Errorf("tainted %v, want [10]", f.tainted)
	}
}

// TestWatchTaintsOnlyAgentsInScope: with response.only_under (InScope),
// an agent outside the sensor's scope is not marked in the kernel, so its
// tree never meets the tamper and fresh-exec tripwires of this sensor.
func TestWatchTaintsOnlyAgentsInScope(t *testing.T) {
	t.Parallel()
	f := &fakeTripwires{}
	w := NewWatch(WatchOptions{Layer: f, IsAgent: func(name, exe string) bool { return name == "agentmon" },
		InScope: func(pid int) bool { return pid == 20 }})
	for _, p := range []event.Process{{PID: 10, Name: "agentmon"}, {PID: 20, Name: "agentmon"}} {
		ev := event.Event{Event: event.Meta{Dataset: event.DatasetProcess, Action: "exec"}, Process: &p}
		w.Detect(&ev)
	}
	if len(f.tainted) != 1 || f.tainted[0] != 20 {
		t.Errorf("tainted %v, want [20] (10 is outside the scope)", f.tainted)
	}
}

// TestWatchUnreportedAttackSharesTheLiveAlertID: an attack reported live
// and again at the next start (the killed sensor read its record but did
// not journal it) has one alert id, so the collector stores it once; the
// family is marked reported either way.
func TestWatchUnreportedAttackSharesTheLiveAlertID(t *testing.T) {
	t.Parallel()
	f := &markingTripwires{}
	w := NewWatch(WatchOptions{Layer: f, BootID: "boot-1"})
	live := w.event(Tamper{Reason: ReasonSignal, PID: 61, Target: 7, Signal: 9, Family: 60})
	later := w.event(Tamper{Reason: reasonUnreported, PID: 60, Family: 60})
	other := w.event(Tamper{Reason: ReasonSignal, PID: 71, Target: 7, Signal: 9, Family: 70})
	a, b, c := w.Detect(&live), w.Detect(&later), w.Detect(&other)
	if len(a) != 1 || len(b) != 1 || len(c) != 1 {
		t.Fatalf("detections %d %d %d", len(a), len(b), len(c))
	}
	if b[0].Alert.Rule.ID != RuleUnreported || a[0].Alert.Rule.ID != RuleSignal {
		t.Errorf("rules %s %s", a[0].Alert.Rule.ID, b[0].Alert.Rule.ID)
	}
	if a[0].Alert.Event.ID != b[0].Alert.Event.ID || a[0].Alert.Event.ID == c[0].Alert.Event.ID {
		t.Errorf("alert ids %s %s %s: want the first two equal, the third different", a[0].Alert.Event.ID, b[0].Alert.Event.ID, c[0].Alert.Event.ID)
	}
	if len(f.marked) != 3 || f.marked[0] != 60 || f.marked[2] != 70 {
		t.Errorf("marked %v, want [60 60 70]", f.marked)
	}
}

type markingTripwires struct {
	fakeTripwires
	marked []int
}

func (m *markingTripwires) MarkReported(fam int) error { m.marked = append(m.marked, fam); return nil }

// TestWatchJudgesStops checks that every stop is judged once: a decoy's name
// on another file and honest bursts are resumed and counted, a confirmed
// decoy hit and a malicious family burst become alerts whose response kills
// the tree (for a family, the family root's).
func TestWatchJudgesStops(t *testing.T) {
	t.Parallel()
	f := &fakeTripwires{
		stopped: []Stopped{{PID: 70, Reason: ReasonDecoyOpen, Name: "0000 Accounts.pdf"}},
		records: []Tamper{
			{Reason: ReasonDecoyOpen, PID: 70, Name: "0000 Accounts.pdf"}, // the same stop as the map's
			{Reason: ReasonDecoyRename, PID: 71, Name: "0000 Accounts.pdf"},
			{Reason: ReasonBurst, PID: 72, Name: "/srv/shop/a.txt"},
			{Reason: ReasonBurst, PID: 73, Family: 60, Name: "/srv/shop/b.txt"},
		},
	}
	kill := map[int]bool{71: true, 73: true}
	w := NewWatch(WatchOptions{Layer: f, Judge: func(_ context.Context, s Stopped) Judgement {
		return Judgement{Kill: kill[s.PID], Why: "test"}
	}})
	var mu sync.Mutex
	var evs []event.Event
	if err := w.Run(context.Background(), func(e event.Event) { mu.Lock(); evs = append(evs, e); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	resumed := map[int]bool{}
	for _, p := range f.resumed {
		resumed[p] = true
	}
	f.mu.Unlock()
	if len(resumed) != 2 || !resumed[70] || !resumed[72] {
		t.Errorf("resumed %v, want 70 and 72 once each", f.resumed)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %+v", len(evs), evs)
	}
	targets := map[string]int{}
	for i := range evs {
		ds := w.Detect(&evs[i])
		if len(ds) != 1 || ds[0].Response != event.ActionKill || ds[0].Target == nil || !ds[0].Target.Tree {
			t.Fatalf("event %d: detections %+v", i, ds)
		}
		targets[ds[0].Alert.Rule.ID] = ds[0].Target.PID
	}
	if targets[RuleDecoy] != 71 || targets[RuleBurst] != 60 {
		t.Errorf("kill targets %v, want the decoy toucher 71 and the family root 60", targets)
	}
	if got := w.Verdicts(ReasonBurst, "resume"); got != 1 {
		t.Errorf("burst resumes counted %v, want 1", got)
	}
	if got := w.Verdicts(ReasonDecoyOpen, "resume"); got != 1 {
		t.Errorf("decoy resumes counted %v, want 1", got)
	}
}
