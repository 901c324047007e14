// Package tamper makes the sensor's own unclean stops visible. The sensor
// writes a marker file into its state dir when it starts protecting the host
// and removes it after a clean shutdown (SIGTERM or SIGINT, queues drained).
// A marker found at start means the previous run ended any other way —
// SIGKILL, a crash, the OOM killer, power loss — and becomes the alert
// TW-SENS-0001 "Sensor restarted after an unclean stop". The boot id in the
// marker tells a sensor that died while the host ran on (killed or crashed:
// high severity) from a host that went down hard (low severity).
//
// The collector sees the other half: a sensor that stays down raises
// TW-COLL-0001 "Sensor silenced" there.
package tamper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/alert"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// Names and identifiers.
const (
	// MarkerFile is the marker's name in the state dir.
	MarkerFile = "running.json"
	// RuleUnclean is the rule id of the alert.
	RuleUnclean = "TW-SENS-0001"
	// Dataset and ActionUnclean mark the internal event the source emits
	// and the detector turns into the alert.
	Dataset       = "tillwatch.sensor"
	ActionUnclean = "sensor-unclean-restart"
	// DefaultBootIDPath is Linux's id of the current boot.
	DefaultBootIDPath = "/proc/sys/kernel/random/boot_id"
)

// Severities: the sensor itself died while the host kept running, or the
// host went down without stopping it (power cut, reset, kernel panic).
const (
	SeveritySameBoot  = 73
	SeverityNewBoot   = 21
	SeverityUnknown   = 47
	componentName     = "tamper"
	markerPermissions = 0o600
)

// Marker is what the marker file holds: the run that wrote it.
type Marker struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Version string    `json:"version"`
	BootID  string    `json:"boot_id,omitempty"`
}

// Options configure a Watch.
type Options struct {
	StateDir string
	// Version is the running sensor's version, recorded in the marker.
	Version string
	// BootIDPath is read for the boot id (default DefaultBootIDPath; a
	// missing file means "unknown", as on other systems than Linux).
	BootIDPath string
	PID        int              // default os.Getpid()
	Now        func() time.Time // default time.Now
}

// Watch is both a pipeline.Source (it emits one event at start when the
// previous run stopped uncleanly) and a pipeline.Detector (it turns that
// event into the alert). Begin and End bracket the protected run.
type Watch struct {
	o    Options
	path string

	mu      sync.Mutex
	pending *event.Event // the event Run emits; nil once emitted or if none
}

// New returns a Watch keeping its marker in o.StateDir.
func New(o Options) *Watch {
	if o.BootIDPath == "" {
		o.BootIDPath = DefaultBootIDPath
	}
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Watch{o: o, path: filepath.Join(o.StateDir, MarkerFile)}
}

// Begin is called once when the sensor starts protecting the host: it reads
// the marker of the previous run (queueing the event Run emits if there is
// one) and writes this run's marker, synced to disk.
func (w *Watch) Begin() error {
	bootID := w.bootID()
	prev, readErr := os.ReadFile(w.path)
	switch {
	case errors.Is(readErr, os.ErrNotExist):
	case readErr != nil:
		return fmt.Errorf("unclean-stop marker: %w", readErr)
	default:
		ev := w.uncleanEvent(prev, bootID)
		w.mu.Lock()
		w.pending = &ev
		w.mu.Unlock()
	}
	b, err := json.Marshal(Marker{PID: w.o.PID, Started: w.o.Now().UTC(), Version: w.o.Version, BootID: bootID})
	if err != nil {
		return err
	}
	return writeSynced(w.path, b)
}

// End removes the marker after a clean shutdown. Anything that keeps End
// from running leaves the marker behind for the next start to report.
func (w *Watch) End() error {
	if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	syncDir(filepath.Dir(w.path))
	return nil
}

// Name implements pipeline.Source and pipeline.Detector.
func (w *Watch) Name() string { return componentName }

// Run implements pipeline.Source: it emits the queued event once, then
// waits for shutdown.
func (w *Watch) Run(ctx context.Context, emit func(event.Event)) error {
	w.mu.Lock()
	ev := w.pending
	w.pending = nil
	w.mu.Unlock()
	if ev != nil {
		emit(*ev)
	}
	<-ctx.Done()
	return nil
}

// Detect implements pipeline.Detector.
func (w *Watch) Detect(ev *event.Event) []pipeline.Detection {
	if ev.Event.Dataset != Dataset || ev.Event.Action != ActionUnclean {
		return nil
	}
	m := alert.Meta{
		RuleID:   RuleUnclean,
		RuleName: "Sensor restarted after an unclean stop",
		Description: "The previous run of the sensor ended without a clean shutdown: it was killed (SIGKILL), crashed, " +
			"ran out of memory, or the host lost power. Attackers kill endpoint sensors before they act.",
		Ruleset:    event.RulesetIntegrity,
		Severity:   ev.Event.Severity,
		Action:     ActionUnclean,
		Techniques: []alert.Technique{{ID: "T1562.001", Name: "Impair Defenses: Disable or Modify Tools"}},
		Tactic:     &alert.Technique{ID: "TA0005", Name: "Defense Evasion"},
	}
	a := alert.FromEvent(m, ev, ev.Message)
	a.Event.Reason = ev.Event.Reason
	return []pipeline.Detection{{Alert: a}}
}

// uncleanEvent describes the previous run from its marker.
func (w *Watch) uncleanEvent(raw []byte, bootID string) event.Event {
	var prev Marker
	desc := "the previous run"
	sev, why := SeverityUnknown, "it was killed, crashed, or the host went down"
	if err := json.Unmarshal(raw, &prev); err != nil || prev.PID == 0 {
		// A torn marker is itself a sign of an abrupt end (power loss).
		desc = "the previous run (its marker is unreadable)"
	} else {
		desc = fmt.Sprintf("the previous run (pid %d, version %s, started %s)", prev.PID, prev.Version, prev.Started.UTC().Format(time.RFC3339))
		switch {
		case bootID == "" || prev.BootID == "":
		case prev.BootID == bootID:
			sev, why = SeveritySameBoot, "the host kept running, so the sensor process itself was killed (SIGKILL), crashed or was OOM-killed"
		default:
			sev, why = SeverityNewBoot, "the host has rebooted since without stopping the sensor: power loss, a reset or a kernel crash"
		}
	}
	return event.Event{
		Timestamp: w.o.Now().UTC(),
		Message:   "sensor restarted after an unclean stop: " + desc + " ended without a clean shutdown; " + why,
		Event: event.Meta{
			Kind: event.KindEvent, ID: event.NewID(), Category: []string{"host"}, Type: []string{"start"},
			Action: ActionUnclean, Dataset: Dataset, Module: "tamper", Severity: sev, Reason: why,
		},
	}
}

func (w *Watch) bootID() string {
	b, err := os.ReadFile(w.o.BootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeSynced writes path atomically and durably: a power cut leaves the
// old marker or the new one, and the new one survives it.
func writeSynced(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	if err := tmp.Chmod(markerPermissions); err != nil {
		tmp.Close()
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("unclean-stop marker: %w", err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename or removal in dir durable where the system can
// sync a directory (Windows cannot); failing that, the marker is only as
// durable as the file system makes it, which is not worth failing over.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
