//go:build cgo

package yara

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	yr "github.com/tillwatch/tillwatch/sensor/yara"
)

// sample copies a harmless positive sample of the built-in rules.
func sample(t *testing.T, dir, name, from string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "rules", "yara", "tests", from))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetector(t *testing.T) {
	t.Parallel()
	eng, err := yr.New(yr.Options{Builtin: rules.Builtin, BuiltinDir: "yara"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Engine: eng, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	enc := sample(t, dir, "vm-locker", "esxi_encryptor/positive/stop-and-lock.sh")
	note := sample(t, dir, "README.cmd", "kaseya_dropper/positive/procedure.cmd")
	clean := filepath.Join(dir, "ok.sh")
	if err := os.WriteFile(clean, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	wakes := make(chan event.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, func(ev event.Event) { wakes <- ev }) }()
	defer func() { cancel(); <-done }()

	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	execEv := func(exe string) *event.Event {
		return &event.Event{
			Event:   event.Meta{Kind: event.KindEvent, Category: []string{"process"}, Type: []string{"start"}, Action: "exec"},
			Process: &event.Process{PID: 4242, Name: filepath.Base(exe), Executable: exe, Start: &start},
		}
	}
	fileEv := &event.Event{
		Event: event.Meta{Kind: event.KindEvent, Dataset: event.DatasetFile, Category: []string{"file"}, Type: []string{"change"}, Action: "close-write"},
		File:  &event.File{Path: note},
	}

	// collect feeds wake-ups back into Detect until n detections came
	// back or 10s passed (a bounded wait, not a sleep).
	collect := func(n int, got []pipeline.Detection) []pipeline.Detection {
		timeout := time.After(10 * time.Second)
		for len(got) < n {
			select {
			case w := <-wakes:
				if w.Event.Action != ActionMatch || w.Event.Kind != event.KindEvent {
					t.Fatalf("wake-up event: %+v", w.Event)
				}
				got = append(got, d.Detect(&w)...)
			case <-timeout:
				t.Fatalf("only %d of %d detections within 10s", len(got), n)
			}
		}
		return got
	}

	// Detect only queues scans; a scan that finished while the next event
	// was being handed in comes back with that event, which is the design
	// (finished detections return with any later event), so count those.
	var early []pipeline.Detection
	for _, ev := range []*event.Event{execEv(enc), execEv(clean), fileEv} {
		early = append(early, d.Detect(ev)...)
	}
	byRule := map[string]pipeline.Detection{}
	for _, det := range collect(2, early) {
		byRule[det.Alert.Rule.ID] = det
	}
	ex, ok := byRule["TW-YARA-0005"]
	if !ok {
		t.Fatalf("no ESXi encryptor alert: %v", byRule)
	}
	a := ex.Alert
	if a.Rule.Ruleset != event.RulesetYARA || a.Rule.Name != "TW_Linux_ESXi_Encryptor" || a.Event.Severity != 88 ||
		a.Threat.Technique.ID[0] != "T1486" || a.Rule.Author[0] != "tillwatch" || a.Rule.Reference == "" ||
		a.Process.Hash == nil || a.Process.Hash.SHA256 == "" || a.Event.Kind != event.KindAlert {
		t.Fatalf("exec alert fields: %+v rule %+v threat %+v", a.Event, a.Rule, a.Threat)
	}
	if ex.Response != event.ActionKill || ex.Target == nil || ex.Target.PID != 4242 || ex.Target.Start != start.UnixMilli() {
		t.Fatalf("exec response: %q %+v", ex.Response, ex.Target)
	}
	fd, ok := byRule["TW-YARA-0003"]
	if !ok || fd.Alert.File == nil || fd.Alert.File.Path != note || fd.Response != "" || fd.Alert.File.Hash.SHA256 == "" {
		t.Fatalf("file alert: %+v", fd)
	}

	// The same binary executed again is answered from the sha256 cache:
	// no second alert (late wake-ups of the first scans return nothing).
	d.Detect(execEv(enc))
	d.Detect(execEv(clean))
	quiet := time.After(time.Second)
	for {
		select {
		case w := <-wakes:
			if extra := d.Detect(&w); len(extra) != 0 {
				t.Fatalf("second alert: %+v", extra[0].Alert.Rule)
			}
		case <-quiet:
			return
		}
	}
}

// TestDroppedWakeUpRepeated: a wake-up the bus dropped is repeated while a
// detection waits, and none comes once nothing waits (no idle timer).
func TestDroppedWakeUpRepeated(t *testing.T) {
	t.Parallel()
	eng, err := yr.New(yr.Options{Builtin: rules.Builtin, BuiltinDir: "yara"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	enc := sample(t, t.TempDir(), "vm-locker", "esxi_encryptor/positive/stop-and-lock.sh")
	wakes := make(chan event.Event, 16)
	var dropped atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.Run(ctx, func(ev event.Event) {
			if dropped.CompareAndSwap(false, true) {
				return // the first wake-up is lost, as on a full bus
			}
			wakes <- ev
		})
	}()
	defer func() { cancel(); <-done }()

	ev := &event.Event{
		Event:   event.Meta{Kind: event.KindEvent, Category: []string{"process"}, Type: []string{"start"}, Action: "exec"},
		Process: &event.Process{PID: 4242, Name: "vm-locker", Executable: enc},
	}
	got := d.Detect(ev)
	timeout := time.After(20 * time.Second)
	for len(got) == 0 {
		select {
		case w := <-wakes:
			got = append(got, d.Detect(&w)...)
		case <-timeout:
			t.Fatal("the dropped wake-up was not repeated within 20s")
		}
	}
	if got[0].Alert.Rule.ID != "TW-YARA-0005" {
		t.Errorf("detection %s", got[0].Alert.Rule.ID)
	}
	// Nothing waits now: at most one late repeat (already in flight), then
	// silence.
	quiet := time.After(3 * time.Second)
	n := 0
	for {
		select {
		case w := <-wakes:
			if extra := d.Detect(&w); len(extra) != 0 {
				t.Fatalf("second detection %+v", extra[0].Alert.Rule)
			}
			if n++; n > 1 {
				t.Fatalf("%d wake-ups with nothing parked", n)
			}
		case <-quiet:
			return
		}
	}
}
