package process

import (
	"slices"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

var evBase = time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)

// newFixtureTracker returns a tracker over the fake proc tree whose event
// clock maps timestamp_ns n to evBase+n.
func newFixtureTracker(t *testing.T) (*tracker, *Source) {
	t.Helper()
	k, s := newBareTracker(t)
	if err := k.snapshot(); err != nil {
		t.Fatal(err)
	}
	return k, s
}

// newBareTracker is newFixtureTracker without the initial snapshot.
func newBareTracker(t *testing.T) (*tracker, *Source) {
	t.Helper()
	s := New(Config{ProcRoot: fixtureRoot(t)}, proctree.New(proctree.Options{}), discardLogger())
	k, err := s.newTracker(func(ns uint64) time.Time { return evBase.Add(time.Duration(ns)) })
	if err != nil {
		t.Fatal(err)
	}
	k.fs.user = fixtureUsers
	k.now = func() time.Time { return evBase.Add(time.Hour) }
	return k, s
}

func forkEv(ns uint64, parentTID, parent, childTID, child int) procEvent {
	return procEvent{What: procEventFork, TimestampNS: ns, ParentPID: parentTID, ParentTGID: parent, ChildPID: childTID, ChildTGID: child}
}
func execEv(ns uint64, pid int) procEvent {
	return procEvent{What: procEventExec, TimestampNS: ns, PID: pid, TGID: pid}
}
func exitEv(ns uint64, tid, pid int, status uint32) procEvent {
	return procEvent{What: procEventExit, TimestampNS: ns, PID: tid, TGID: pid, ExitStatus: status}
}

func TestSnapshotEmitsNothing(t *testing.T) {
	t.Parallel()
	_, s := newFixtureTracker(t)
	if s.Stats().Events != 0 {
		t.Fatalf("snapshot emitted %d events", s.Stats().Events)
	}
	anc := s.table.Ancestry(4242, 0)
	if got := pidsOf(anc); !slices.Equal(got, []int{500, 1}) {
		t.Fatalf("Ancestry(4242) after snapshot = %v, want [500 1]", got)
	}
}

func pidsOf(ps []proctree.Proc) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

func TestTrackerHandle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []procEvent
		check  func(t *testing.T, s *Source, evs []event.Event)
	}{
		{
			name:   "exec of a known process is enriched and has its parent",
			events: []procEvent{execEv(10, 4242)},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 1 {
					t.Fatalf("got %d events, want 1", len(evs))
				}
				ev := evs[0]
				checkTelemetry(t, ev, ActionExec)
				p := ev.Process
				if p.PID != 4242 || p.Executable != "/tmp/.x/payload (deleted)" || p.CommandLine != "./payload -k key with space" ||
					p.Name != "evil) (x" || p.WorkingDirectory != "/tmp/.x" || p.User == nil || p.User.ID != "1001" || p.User.Name != "pos" {
					t.Errorf("process = %+v", p)
				}
				if p.Parent == nil || p.Parent.PID != 500 || p.Parent.Name != "AgentMonitorService" || p.Parent.Executable != "/opt/rmm/AgentMonitorService" {
					t.Errorf("parent = %+v", p.Parent)
				}
				if !ev.Timestamp.Equal(evBase.Add(10)) {
					t.Errorf("timestamp = %v, want the event time", ev.Timestamp)
				}
			},
		},
		{
			name: "process gone before enrichment keeps the fork record",
			events: []procEvent{
				forkEv(10, 501, 500, 6000, 6000),
				execEv(20, 6000),
				exitEv(30, 6000, 6000, 3<<8),
			},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 2 {
					t.Fatalf("got %d events, want exec and exit", len(evs))
				}
				start, end := evs[0], evs[1]
				checkTelemetry(t, start, ActionExec)
				checkTelemetry(t, end, ActionExit)
				if p := start.Process; p.PID != 6000 || p.Name != UnknownName || p.Executable != "" ||
					p.Start == nil || !p.Start.Equal(evBase.Add(10)) || p.Parent == nil || p.Parent.PID != 500 || p.Parent.Name != "AgentMonitorService" {
					t.Errorf("start process = %+v parent %+v", p, p.Parent)
				}
				if p := end.Process; p.ExitCode == nil || *p.ExitCode != 3 || !p.End.Equal(evBase.Add(30)) || p.Parent == nil || p.Parent.PID != 500 {
					t.Errorf("end process = %+v", p)
				}
				if s.Stats().EnrichFailures != 1 {
					t.Errorf("EnrichFailures = %d, want 1", s.Stats().EnrichFailures)
				}
				if got := pidsOf(s.table.Ancestry(6000, 0)); !slices.Equal(got, []int{500, 1}) {
					t.Errorf("Ancestry(6000) = %v, want [500 1]", got)
				}
			},
		},
		{
			name:   "exec without fork record still reports the pid",
			events: []procEvent{execEv(20, 6001)},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 1 || evs[0].Process.PID != 6001 || evs[0].Process.Name != UnknownName || evs[0].Process.Parent != nil {
					t.Fatalf("events = %+v", evs)
				}
			},
		},
		{
			name: "fork-only child exits with the parent's image",
			events: []procEvent{
				forkEv(10, 4242, 4242, 6002, 6002),
				exitEv(20, 6002, 6002, 9), // SIGKILL
			},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 1 {
					t.Fatalf("got %d events, want the exit", len(evs))
				}
				p := evs[0].Process
				if p.Name != "evil) (x" || *p.ExitCode != 137 || p.Parent.PID != 4242 {
					t.Errorf("process = %+v", p)
				}
			},
		},
		{
			name: "threads are not processes",
			events: []procEvent{
				forkEv(10, 4242, 4242, 6003, 4242), // new thread of 4242
				exitEv(20, 6003, 4242, 0),          // that thread exits
			},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 0 {
					t.Fatalf("thread events emitted: %+v", evs)
				}
				if _, ok := s.table.Get(6003); ok {
					t.Error("thread recorded as a process")
				}
				if p, _ := s.table.Get(4242); p.Exited {
					t.Error("thread exit ended its process")
				}
			},
		},
		{
			name:   "exit of an unknown process is dropped",
			events: []procEvent{exitEv(20, 7000, 7000, 0)},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 0 {
					t.Fatalf("events = %+v", evs)
				}
			},
		},
		{
			name:   "other kinds are ignored",
			events: []procEvent{{What: 0x200, PID: 4242, TGID: 4242}, {What: procEventNone}},
			check: func(t *testing.T, s *Source, evs []event.Event) {
				if len(evs) != 0 {
					t.Fatalf("events = %+v", evs)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, s := newFixtureTracker(t)
			var r recorder
			for _, ev := range tc.events {
				k.handle(ev, r.emit)
			}
			tc.check(t, s, r.all())
			if got := s.Stats().Events; got != uint64(len(r.all())) {
				t.Errorf("Stats().Events = %d, emitted %d", got, len(r.all()))
			}
		})
	}
}

func TestResync(t *testing.T) {
	t.Parallel()
	k, s := newBareTracker(t)
	// The table before events were lost; meanwhile 9000 ended, the old
	// 4242 ended and its pid was reused, and 2, 77 and 500 started.
	s.table.Upsert(proctree.Proc{PID: 1, Start: ticks(100), Name: "systemd", UID: 0})
	s.table.Fork(1, 9000, evBase)
	s.table.Upsert(proctree.Proc{PID: 4242, PPID: 1, Start: ticks(1), Name: "old", UID: proctree.UnknownUID})
	var r recorder
	started, ended, err := k.resync(r.emit)
	if err != nil {
		t.Fatal(err)
	}
	if started != 4 || ended != 2 {
		t.Fatalf("resync started %d ended %d, want 4 and 2", started, ended)
	}
	var got []string
	for _, ev := range r.all() {
		checkTelemetry(t, ev, ev.Event.Action)
		if !slices.Equal(ev.Tags, []string{TagResync}) || !ev.Timestamp.Equal(k.now()) {
			t.Errorf("event %+v: want tag %q and the rescan time", ev.Event, TagResync)
		}
		got = append(got, ev.Event.Action+" "+ev.Process.Name)
	}
	slices.Sort(got)
	want := []string{"exec AgentMonitorService", "exec defunct", "exec evil) (x", "exec kthreadd", "exit old", "exit systemd"}
	if !slices.Equal(got, want) {
		t.Fatalf("resync events = %q, want %q", got, want)
	}
	if p, ok := s.table.Get(9000); !ok || !p.Exited || p.ExitCode != proctree.ExitCodeUnknown {
		t.Errorf("9000 after resync = %+v, %v; want exited, code unknown", p, ok)
	}
	// A second resync finds nothing new.
	started, ended, _ = k.resync(r.emit)
	if started != 0 || ended != 0 {
		t.Fatalf("second resync started %d ended %d, want 0 and 0", started, ended)
	}
}
