package rmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/internal/filehash"
)

// BaselineFile is the name of the baseline in the state dir.
const BaselineFile = "rmm-baseline.json"

// MaxHashSize bounds what HashFile reads; RMM agents are tens of MB at most.
const MaxHashSize = 512 << 20

// Verdicts of Baseline.Check.
const (
	VerdictNew     = "new"     // first sight: recorded as the baseline
	VerdictSame    = "same"    // matches the baseline
	VerdictChanged = "changed" // differs from the baseline: tampered, or updated
)

// BaselineEntry is the recorded state of one approved agent binary.
type BaselineEntry struct {
	Product  string    `json:"product"`
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Recorded time.Time `json:"recorded"`
	// Reason says why this digest was accepted ("first seen", "update by ...").
	Reason string `json:"reason,omitempty"`
}

// Baseline is the sha256 baseline of approved agents' binaries, kept in the
// state dir so a restart does not forget it (a tampered binary must not
// become the baseline just because the sensor restarted). Safe for
// concurrent use; every change is written through atomically.
type Baseline struct {
	file string
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]BaselineEntry // by path
}

// OpenBaseline loads the baseline from stateDir, or starts an empty one. A
// corrupt file is an error: silently starting over would accept a tampered
// binary as the new truth.
func OpenBaseline(stateDir string, now func() time.Time) (*Baseline, error) {
	if now == nil {
		now = time.Now
	}
	b := &Baseline{file: filepath.Join(stateDir, BaselineFile), now: now, entries: map[string]BaselineEntry{}}
	raw, err := os.ReadFile(b.file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("rmm baseline: %w", err)
	}
	if err := json.Unmarshal(raw, &b.entries); err != nil {
		return nil, fmt.Errorf("rmm baseline %s is corrupt (%v): inspect it, then remove it to re-baseline the approved agents", b.file, err)
	}
	if b.entries == nil {
		b.entries = map[string]BaselineEntry{} // "null": no map at all, and the first Check panicked
	}
	return b, nil
}

// Check compares sum with the baseline of path. On first sight it records
// sum (trust on first use) and returns VerdictNew. On a difference it
// returns VerdictChanged and the recorded entry, and records nothing: the
// caller decides between Accept (a legitimate update) and an alert.
func (b *Baseline) Check(product, path, sum string, size int64) (string, BaselineEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	prev, ok := b.entries[path]
	switch {
	case !ok:
		b.entries[path] = BaselineEntry{Product: product, SHA256: sum, Size: size, Recorded: b.now().UTC(), Reason: "first seen"}
		return VerdictNew, BaselineEntry{}, b.saveLocked()
	case prev.SHA256 == sum:
		return VerdictSame, prev, nil
	default:
		return VerdictChanged, prev, nil
	}
}

// Accept records sum as the new baseline of path, with the reason.
func (b *Baseline) Accept(product, path, sum string, size int64, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries[path] = BaselineEntry{Product: product, SHA256: sum, Size: size, Recorded: b.now().UTC(), Reason: reason}
	return b.saveLocked()
}

// Get returns the entry for path.
func (b *Baseline) Get(path string) (BaselineEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[path]
	return e, ok
}

func (b *Baseline) saveLocked() error {
	raw, err := json.MarshalIndent(b.entries, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(b.file, raw, 0o600); err != nil {
		return fmt.Errorf("rmm baseline: %w", err)
	}
	return nil
}

// HashFile returns the sha256 and size of the regular file at path (at
// most MaxHashSize), answered from c when this version of the file was
// hashed before; c may be nil.
func HashFile(c *filehash.Cache, path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s: not a regular file", path)
	}
	if c == nil {
		c = filehash.New(1)
	}
	return c.Sum(f, MaxHashSize)
}
