// Package rulesync keeps the sensor's rules in step with the signed rule
// bundle its collector serves. A heartbeat answer names the served serial;
// when it differs from the running one, the bundle is fetched, its
// signature checked against the rule-signing keys this sensor pins (before
// anything of it is read), a serial that is not newer refused unless the
// operator allows downgrades, the archive unpacked into the state dir and
// loaded once as a trial; only then does it become current, and the sensor
// restarts into it. A refused bundle is an alert: a downgrade or a bad
// signature is someone trying to change what the sensor detects.
package rulesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Fetcher fetches the served bundle (sensor/uplink); nil bytes mean the
// sensor already runs it.
type Fetcher interface {
	FetchRules(ctx context.Context, have int64) ([]byte, error)
}

// Options configure a Syncer.
type Options struct {
	Fetcher Fetcher
	// Keys are the rule-signing keys this sensor pins (rule_bundles.keys).
	Keys []killswitch.PublicKey
	// StateDir holds rules/<serial>/ and rules/current.json.
	StateDir       string
	AllowDowngrade bool
	// Validate loads a candidate rule folder the way the sensor will; an
	// error keeps the running rules.
	Validate func(dir string) error
	// Applied is called once a bundle became current (the sensor restarts).
	Applied func(rulebundle.Manifest)
	// Emit receives the alert about a refused bundle.
	Emit func(event.Event)
	Log  *slog.Logger
}

// Current is the bundle in use, as recorded in rules/current.json.
type Current struct {
	Serial int64  `json:"serial"`
	Name   string `json:"name"`
	Dir    string `json:"dir"` // under StateDir/rules
	// Previous is the folder of the bundle this one replaced, kept so a
	// sensor that cannot load the current bundle falls back to it.
	Previous string `json:"previous,omitempty"`
}

// Candidate is a bundle folder the sensor may run, best first.
type Candidate struct {
	Serial int64
	Dir    string // absolute
}

// Syncer applies bundles. Safe for concurrent use.
type Syncer struct {
	o       Options
	dir     string
	offered chan int64

	mu      sync.Mutex
	cur     Current
	refused map[int64]bool
}

// New reads the current bundle (if any) from the state dir.
func New(o Options) (*Syncer, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With(logkey.Component, "rulesync")
	s := &Syncer{o: o, dir: filepath.Join(o.StateDir, "rules"), offered: make(chan int64, 1), refused: map[int64]bool{}}
	b, err := os.ReadFile(filepath.Join(s.dir, "current.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("rule bundle state: %w", err)
	}
	if err := json.Unmarshal(b, &s.cur); err != nil || s.cur.Serial <= 0 || s.cur.Dir != strconv.FormatInt(s.cur.Serial, 10) || !validPrevious(s.cur.Previous) {
		return nil, fmt.Errorf("rule bundle state %s is corrupt; remove it to run the built-in rules", filepath.Join(s.dir, "current.json"))
	}
	return s, nil
}

// SetFetcher sets how bundles are fetched (before Run).
func (s *Syncer) SetFetcher(f Fetcher) { s.o.Fetcher = f }

// SetApplied sets what happens once a bundle became current (before Run).
func (s *Syncer) SetApplied(f func(rulebundle.Manifest)) { s.o.Applied = f }

// SetEmit sets where refusal alerts go (before Run).
func (s *Syncer) SetEmit(f func(event.Event)) { s.o.Emit = f }

// Current returns the bundle in use and its folder ("" when none).
func (s *Syncer) Current() (Current, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Serial == 0 {
		return s.cur, ""
	}
	return s.cur, filepath.Join(s.dir, s.cur.Dir)
}

func validPrevious(dir string) bool {
	if dir == "" {
		return true
	}
	n, err := strconv.ParseInt(dir, 10, 64)
	return err == nil && n > 0 && strconv.FormatInt(n, 10) == dir
}

// Candidates lists the bundle folders the sensor may load, best first:
// the current bundle, then the one it replaced.
func (s *Syncer) Candidates() []Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Serial == 0 {
		return nil
	}
	out := []Candidate{{Serial: s.cur.Serial, Dir: filepath.Join(s.dir, s.cur.Dir)}}
	if s.cur.Previous != "" {
		n, _ := strconv.ParseInt(s.cur.Previous, 10, 64)
		out = append(out, Candidate{Serial: n, Dir: filepath.Join(s.dir, s.cur.Previous)})
	}
	return out
}

// Offer tells the syncer which serial the collector serves; it never
// blocks (the latest offer wins).
func (s *Syncer) Offer(serial int64) {
	select {
	case <-s.offered:
	default:
	}
	s.offered <- serial
}

// Run applies offered bundles until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case serial := <-s.offered:
			cur, _ := s.Current()
			s.mu.Lock()
			refused := s.refused[serial]
			s.mu.Unlock()
			if serial <= 0 || serial == cur.Serial || refused {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			b, err := s.o.Fetcher.FetchRules(fctx, cur.Serial)
			cancel()
			if err != nil {
				s.o.Log.Warn("fetching the rule bundle failed; retried at the next heartbeat", logkey.Error, err)
				continue
			}
			if b == nil {
				continue
			}
			if err := s.Apply(b); err != nil {
				// Not fetched again until the collector serves another serial.
				s.mu.Lock()
				s.refused[serial] = true
				s.mu.Unlock()
				s.o.Log.Warn("rule bundle not applied", logkey.Error, err)
			}
		}
	}
}

// Apply verifies and installs one bundle; the running rules are kept on
// any error.
func (s *Syncer) Apply(b []byte) error {
	m, archive, err := rulebundle.Open(b, s.o.Keys)
	if err != nil {
		s.refuse(0, "", err)
		return err
	}
	cur, _ := s.Current()
	switch {
	case m.Serial == cur.Serial:
		return nil
	case m.Serial < cur.Serial && !s.o.AllowDowngrade:
		err := fmt.Errorf("rule bundle serial %d is older than the running %d; refused (rule_bundles.allow_downgrade permits it)", m.Serial, cur.Serial)
		s.refuse(m.Serial, m.Name, err)
		return err
	}
	name := strconv.FormatInt(m.Serial, 10)
	final := filepath.Join(s.dir, name)
	staging := final + ".new"
	os.RemoveAll(staging)
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if err := rulebundle.Extract(archive, staging); err != nil {
		s.refuse(m.Serial, m.Name, err)
		return err
	}
	if s.o.Validate != nil {
		if err := s.o.Validate(staging); err != nil {
			os.RemoveAll(staging)
			err = fmt.Errorf("rule bundle serial %d does not load: %w", m.Serial, err)
			s.refuse(m.Serial, m.Name, err)
			return err
		}
	}
	os.RemoveAll(final)
	if err := os.Rename(staging, final); err != nil {
		return err
	}
	next := Current{Serial: m.Serial, Name: m.Name, Dir: name}
	if cur.Serial != 0 && cur.Dir != name {
		next.Previous = cur.Dir
	}
	cb, _ := json.Marshal(next)
	if err := atomicfile.Write(filepath.Join(s.dir, "current.json"), cb, 0o600); err != nil {
		return fmt.Errorf("rule bundle state: %w", err)
	}
	prev := cur
	s.mu.Lock()
	s.cur = next
	s.mu.Unlock()
	// The replaced bundle is kept as the fallback; the one before it goes
	// (the running process still has its rules loaded).
	if prev.Previous != "" && prev.Previous != name && prev.Previous != next.Previous {
		os.RemoveAll(filepath.Join(s.dir, prev.Previous))
	}
	s.o.Log.Warn("rule bundle installed; restarting into it", "serial", m.Serial, "name", m.Name, "files", m.Files, "previous", prev.Serial)
	if s.o.Applied != nil {
		s.o.Applied(m)
	}
	return nil
}

// RuleRefused is the alert for a rule bundle the sensor would not load.
const RuleRefused = "TW-RULES-0001"

var refusedMeta = alert.Meta{
	RuleID: RuleRefused, RuleName: "Rule bundle refused", Ruleset: event.RulesetIntegrity, Severity: 73,
	Description: "The sensor refused a rule bundle from its collector: not signed by a pinned rule-signing key, tampered, an older serial (a downgrade), unsafe, or rules that do not load. Someone may be trying to change what the sensor detects.",
	Action:      "rule-bundle-refused",
	Techniques:  []alert.Technique{{ID: "T1562.001", Name: "Impair Defenses: Disable or Modify Tools"}},
	Tactic:      &alert.Technique{ID: "TA0005", Name: "Defense Evasion"},
}

func (s *Syncer) refuse(serial int64, name string, err error) {
	if s.o.Emit == nil {
		return
	}
	src := event.Event{Timestamp: time.Now().UTC(), Event: event.Meta{Category: []string{"configuration"}, Type: []string{"denied"}}}
	a := alert.FromEvent(refusedMeta, &src, fmt.Sprintf("refused rule bundle %d (%s): %s", serial, name, err))
	a.Event.Outcome = "failure"
	s.o.Emit(a)
}
