package tamper

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// newWatch returns a Watch on a fresh state dir with the boot id bootID
// ("" = the system reports none).
func newWatch(t *testing.T, dir, bootID string, pid int) *Watch {
	t.Helper()
	bootPath := filepath.Join(t.TempDir(), "boot_id")
	if bootID != "" {
		if err := os.WriteFile(bootPath, []byte(bootID+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return New(Options{StateDir: dir, Version: "1.2.3", BootIDPath: bootPath, PID: pid, Now: func() time.Time { return t0 }})
}

// emitted runs the source until it has had its chance to emit.
func emitted(t *testing.T, w *Watch) []event.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var got []event.Event
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(ev event.Event) { got = append(got, ev) }) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	return got
}

func TestUncleanStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		prevBoot, nowBoot string
		marker            string // raw previous marker; "" = written by a Watch
		wantSeverity      int
		wantMessage       string
	}{
		{"killed while the host ran", "boot-a", "boot-a", "", SeveritySameBoot, "the sensor process itself was killed"},
		{"host went down hard", "boot-a", "boot-b", "", SeverityNewBoot, "power loss"},
		{"no boot id on this system", "", "", "", SeverityUnknown, "killed, crashed, or the host went down"},
		{"torn marker", "boot-a", "boot-a", `{"pid":`, SeverityUnknown, "marker is unreadable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			first := newWatch(t, dir, tc.prevBoot, 4242)
			if err := first.Begin(); err != nil {
				t.Fatal(err)
			}
			if got := emitted(t, first); len(got) != 0 {
				t.Fatalf("first start ever emitted %d events", len(got))
			}
			if tc.marker != "" {
				if err := os.WriteFile(filepath.Join(dir, MarkerFile), []byte(tc.marker), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// No End: the first run was killed.
			second := newWatch(t, dir, tc.nowBoot, 4343)
			if err := second.Begin(); err != nil {
				t.Fatal(err)
			}
			evs := emitted(t, second)
			if len(evs) != 1 {
				t.Fatalf("emitted %d events, want 1", len(evs))
			}
			dets := second.Detect(&evs[0])
			if len(dets) != 1 {
				t.Fatalf("%d detections, want 1", len(dets))
			}
			a := dets[0].Alert
			if a.Event.Kind != event.KindAlert || a.Rule == nil || a.Rule.ID != RuleUnclean || a.Rule.Ruleset != event.RulesetIntegrity {
				t.Fatalf("alert %+v %+v: want kind alert, rule %s, ruleset integrity", a.Event, a.Rule, RuleUnclean)
			}
			if a.Event.Severity != tc.wantSeverity || a.Event.RiskScore != float64(tc.wantSeverity) {
				t.Errorf("severity %d risk %v, want %d", a.Event.Severity, a.Event.RiskScore, tc.wantSeverity)
			}
			if !strings.Contains(a.Message, tc.wantMessage) || !strings.HasPrefix(a.Message, "sensor restarted after an unclean stop") {
				t.Errorf("message %q, want it to contain %q", a.Message, tc.wantMessage)
			}
			if tc.marker == "" && !strings.Contains(a.Message, "pid 4242") {
				t.Errorf("message %q does not name the previous run's pid", a.Message)
			}
			if a.Threat == nil || len(a.Threat.Technique.ID) != 1 || a.Threat.Technique.ID[0] != "T1562.001" {
				t.Errorf("threat %+v, want T1562.001", a.Threat)
			}
			if dets[0].Response != "" || dets[0].Target != nil {
				t.Errorf("the alert proposes a response: %+v", dets[0])
			}
			// The marker now describes the second run.
			var m Marker
			b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
			if err != nil || json.Unmarshal(b, &m) != nil || m.PID != 4343 || m.BootID != tc.nowBoot || m.Version != "1.2.3" {
				t.Errorf("marker %s (err %v), want the second run's", b, err)
			}
		})
	}
}

func TestCleanStopIsQuiet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := newWatch(t, dir, "boot-a", 1)
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, MarkerFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("marker mode %v, want 0600", fi.Mode().Perm())
	}
	if err := w.End(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, MarkerFile)); !os.IsNotExist(err) {
		t.Fatalf("marker still there after End: %v", err)
	}
	if err := w.End(); err != nil {
		t.Errorf("second End: %v", err)
	}
	next := newWatch(t, dir, "boot-a", 2)
	if err := next.Begin(); err != nil {
		t.Fatal(err)
	}
	if got := emitted(t, next); len(got) != 0 {
		t.Fatalf("a start after a clean stop emitted %v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestDetectIgnoresOtherEvents(t *testing.T) {
	t.Parallel()
	w := New(Options{StateDir: t.TempDir()})
	for _, ev := range []event.Event{
		{Event: event.Meta{Kind: event.KindEvent, Dataset: event.DatasetProcess, Action: "exec"}},
		{Event: event.Meta{Kind: event.KindEvent, Dataset: Dataset, Action: "something-else"}},
		{Event: event.Meta{Kind: event.KindState, Dataset: event.DatasetHealth, Action: ActionUnclean}},
	} {
		if d := w.Detect(&ev); d != nil {
			t.Errorf("Detect(%+v) = %v, want nothing", ev.Event, d)
		}
	}
}

func TestBeginFailsOnAnUnusableStateDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "missing")
	if err := New(Options{StateDir: dir}).Begin(); err == nil {
		t.Fatal("Begin succeeded without a state dir")
	}
}
