package killswitch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
)

// maxLedgerKeys bounds the keys a ledger remembers: only pinned responder
// keys are ever charged, so a real set is a few dozen.
const maxLedgerKeys = 1024

// Ledger is a sensor's durable running total of single-key commands per
// responder key (Policy.SingleKey) over the rolling budget window. A sensor
// sees only the commands addressed to it, so what it can hold a key to is
// Policy.BudgetCommands on this host; the fleet-wide host count is the
// collector's. The ledger survives restarts: forgetting what one key
// already ordered would reset its budget.
type Ledger struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	entries map[string][]ledgerEntry // key id -> oldest first
}

type ledgerEntry struct {
	At        time.Time `json:"at"`
	CommandID string    `json:"command_id"`
}

// OpenLedger loads the ledger kept at path (created on first Charge). A
// corrupt file is an error, as with the replay cache.
func OpenLedger(path string, now func() time.Time) (*Ledger, error) {
	if now == nil {
		now = time.Now
	}
	l := &Ledger{path: path, now: now, entries: map[string][]ledgerEntry{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("kill-switch budget ledger: %w", err)
	}
	if err := json.Unmarshal(b, &l.entries); err != nil {
		return nil, fmt.Errorf("kill-switch budget ledger %s is corrupt (%v); move it aside only if you accept that every responder key's budget starts afresh", path, err)
	}
	if l.entries == nil {
		// "null" decodes to no map at all: an empty ledger, not a panic
		// at the first charge.
		l.entries = map[string][]ledgerEntry{}
	}
	return l, nil
}

// Spent is how many commands key was charged for within window.
func (l *Ledger) Spent(key string, window time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.spent(key, l.now().Add(-window))
}

func (l *Ledger) spent(key string, cut time.Time) int {
	n := 0
	for _, e := range l.entries[key] {
		if e.At.After(cut) {
			n++
		}
	}
	return n
}

// Charge spends one command of p's budget for each key, durably, or
// refuses without charging anything when one key has none left. The
// refusal is a *RefusedError (RefuseOverBudget).
func (l *Ledger) Charge(c *Command, keys []string, p Policy) error {
	p = p.WithDefaults()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cut := now.Add(-p.BudgetWindow)
	// A command charged before (the sensor stopped while acting and it
	// was redelivered) is not charged again.
	keys = slices.DeleteFunc(slices.Clone(keys), func(k string) bool {
		return slices.ContainsFunc(l.entries[k], func(e ledgerEntry) bool { return e.CommandID == c.ID })
	})
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if n := l.spent(k, cut); n >= p.BudgetCommands {
			re := refuse(RefuseOverBudget, "responder key %s had %d single-key destructive commands accepted on this host in the last %s (budget %d); a second responder's approval lifts the budget",
				k, n, p.BudgetWindow, p.BudgetCommands)
			re.CommandID = c.ID
			return re
		}
	}
	for k, es := range l.entries {
		i := 0
		for i < len(es) && !es[i].At.After(cut) {
			i++
		}
		if i == len(es) {
			delete(l.entries, k)
		} else {
			l.entries[k] = es[i:]
		}
	}
	for _, k := range keys {
		if _, ok := l.entries[k]; !ok && len(l.entries) >= maxLedgerKeys {
			return fmt.Errorf("kill-switch budget ledger holds %d keys, at most %d", len(l.entries), maxLedgerKeys)
		}
		l.entries[k] = append(l.entries[k], ledgerEntry{At: now, CommandID: c.ID})
	}
	b, err := json.Marshal(l.entries)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(l.path, b, 0o600)
}
