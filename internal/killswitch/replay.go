package killswitch

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
)

// Result statuses a sensor acknowledges with.
const (
	StatusStarted = "started" // recorded before acting; never sent
	StatusOK      = "ok"
	StatusNoop    = "noop" // already in the ordered state
	StatusFailed  = "failed"
	StatusRefused = "refused"
)

// Result is a sensor's typed answer to one command.
type Result struct {
	Status   string   `json:"status"`
	Detail   string   `json:"detail,omitempty"`
	Affected []string `json:"affected,omitempty"`
	// Refusal is the Refuse* reason when Status is refused.
	Refusal string `json:"refusal,omitempty"`
}

// ReplayCache remembers every command a sensor accepted until it expires,
// on disk, so a command cannot be replayed, not even across a restart. A
// redelivery of the very same signed payload (the collector did not get the
// acknowledgement) is not a replay: it gets the recorded result again.
type ReplayCache struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]replayEntry
}

type replayEntry struct {
	Digest   string    `json:"digest"` // sha256 of the payload
	NotAfter time.Time `json:"not_after"`
	Result   Result    `json:"result"`
}

// OpenReplayCache loads the cache kept at path (created on first Record).
// A corrupt file is an error, not an empty cache: forgetting what ran would
// open the door to replays.
func OpenReplayCache(path string, now func() time.Time) (*ReplayCache, error) {
	if now == nil {
		now = time.Now
	}
	rc := &ReplayCache{path: path, now: now, entries: map[string]replayEntry{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return rc, nil
	case err != nil:
		return nil, fmt.Errorf("kill-switch replay cache: %w", err)
	}
	if err := json.Unmarshal(b, &rc.entries); err != nil {
		return nil, fmt.Errorf("kill-switch replay cache %s is corrupt (%v); move it aside only if you accept that commands seen before may run again", path, err)
	}
	if rc.entries == nil {
		// "null" decodes to no map at all: an empty cache, not a panic at
		// the first record (the budget ledger's fuzzer found its twin).
		rc.entries = map[string]replayEntry{}
	}
	return rc, nil
}

func digest(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:])
}

// Check returns the recorded result of an earlier identical delivery
// (prev non-nil; started ones count as not finished and return nil so the
// idempotent action runs again), or a replayed refusal when the id was
// seen with a different payload.
func (rc *ReplayCache) Check(c *Command, payload []byte) (prev *Result, err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	e, ok := rc.entries[c.ID]
	if !ok {
		return nil, nil
	}
	if e.Digest != digest(payload) {
		re := refuse(RefuseReplayed, "id %s was used before by another command", c.ID)
		re.CommandID = c.ID
		return nil, re
	}
	if e.Result.Status == StatusStarted {
		return nil, nil
	}
	r := e.Result
	return &r, nil
}

// Record stores the command's state durably (temp file, fsync, rename)
// and drops entries that expired more than ClockSkew ago.
func (rc *ReplayCache) Record(c *Command, payload []byte, r Result) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.entries[c.ID] = replayEntry{Digest: digest(payload), NotAfter: c.NotAfter, Result: r}
	cut := rc.now().Add(-ClockSkew)
	for id, e := range rc.entries {
		if e.NotAfter.Before(cut) {
			delete(rc.entries, id)
		}
	}
	b, err := json.Marshal(rc.entries)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(rc.path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(rc.path, b, 0o600)
}

// Len is the number of remembered commands.
func (rc *ReplayCache) Len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.entries)
}
