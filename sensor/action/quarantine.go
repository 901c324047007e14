package action

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Names inside QuarantineDir/<id>/.
const (
	QuarantineFileName = "file"      // the quarantined content, mode 0000
	QuarantineMetaName = "meta.json" // a QuarantineEntry
)

// QuarantineEntry is the metadata kept beside a quarantined file: enough to
// put it back exactly (and by hand, see docs/killswitch-actions.md).
type QuarantineEntry struct {
	ID           string `json:"id"`
	OriginalPath string `json:"original_path"`
	SHA256       string `json:"sha256"`
	Size         int64  `json:"size"`
	// Mode is the original permission bits in octal, with setuid, setgid
	// and sticky (as chmod takes them), e.g. "0755" or "4755".
	Mode          string    `json:"mode"`
	UID           int       `json:"uid"`
	GID           int       `json:"gid"`
	MTime         time.Time `json:"mtime"`
	CommandID     string    `json:"command_id,omitempty"`
	QuarantinedAt time.Time `json:"quarantined_at"`
	// Links is how many hard links the file had; the others still exist.
	Links uint64 `json:"links,omitempty"`
}

var quarantineIDPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$`)

// newQuarantineID returns a sortable, unguessable id.
func newQuarantineID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// errTarget marks a target that fails a safety check: the action is
// refused, not failed.
type errTarget struct{ error }

func refuseTarget(format string, a ...any) error { return errTarget{fmt.Errorf(format, a...)} }

// quarantine runs quarantine-file.
func (e *Executor) quarantine(cmdID, path string) Result {
	if !supportsQuarantine {
		return unsupported(ActQuarantineFile)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		if q, ok := e.findQuarantined(path); ok {
			return result(StatusNoop, "quarantine-file: %s is already quarantined as %s", path, q.ID)
		}
		return refused("quarantine-file: %s does not exist", path)
	}
	if err != nil {
		return refused("quarantine-file: %v", err)
	}
	if err := e.underRoot(resolved); err != nil {
		return refused("quarantine-file: %v", err)
	}
	q, note, err := e.quarantineFile(cmdID, resolved)
	var et errTarget
	switch {
	case errors.As(err, &et):
		return refused("quarantine-file: %v", err)
	case errors.Is(err, ErrUnsupported):
		return unsupported(ActQuarantineFile)
	case err != nil:
		return failed("quarantine-file: %s: %v", resolved, err)
	}
	d := fmt.Sprintf("quarantine-file: quarantined %s as %s (sha256 %s, %d bytes)", q.OriginalPath, q.ID, q.SHA256, q.Size)
	if resolved != path {
		d += "; resolved from " + path
	}
	if note != "" {
		d += "; " + note
	}
	return Result{Status: StatusOK, Detail: d, Affected: []string{q.OriginalPath}}
}

// findQuarantined returns the newest entry quarantined from path (or from
// the target of path when path is a now-dangling symlink) whose file is
// still held.
func (e *Executor) findQuarantined(path string) (QuarantineEntry, bool) {
	names := []string{path}
	if t, err := os.Readlink(path); err == nil {
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(path), t)
		}
		names = append(names, filepath.Clean(t))
	}
	all, _ := e.ListQuarantine() // a corrupt entry must not hide the others
	for i := len(all) - 1; i >= 0; i-- {
		q := all[i]
		if !slices.Contains(names, q.OriginalPath) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(e.qdir, q.ID, QuarantineFileName)); err == nil {
			return q, true
		}
	}
	return QuarantineEntry{}, false
}

// ListQuarantine returns every quarantined file, oldest first. Entries whose
// metadata cannot be read are reported in the error; the others are still
// returned.
func (e *Executor) ListQuarantine() ([]QuarantineEntry, error) {
	des, err := os.ReadDir(e.qdir)
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	var out []QuarantineEntry
	var errs []error
	for _, de := range des {
		if !de.IsDir() || !quarantineIDPattern.MatchString(de.Name()) {
			continue
		}
		q, err := e.readEntry(de.Name())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b QuarantineEntry) int {
		if c := a.QuarantinedAt.Compare(b.QuarantinedAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out, errors.Join(errs...)
}

func (e *Executor) readEntry(id string) (QuarantineEntry, error) {
	var q QuarantineEntry
	raw, err := os.ReadFile(filepath.Join(e.qdir, id, QuarantineMetaName))
	if err != nil {
		return q, fmt.Errorf("quarantine %s: %w", id, err)
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return q, fmt.Errorf("quarantine %s: corrupt metadata: %w", id, err)
	}
	if q.ID != id {
		return q, fmt.Errorf("quarantine %s: metadata names id %q", id, q.ID)
	}
	return q, nil
}

// Restore puts a quarantined file back at its original path with its
// original mode, owner and modification time, and removes it from the
// quarantine. It never overwrites: a file at the original path is ErrExists.
func (e *Executor) Restore(id string) error {
	if !quarantineIDPattern.MatchString(id) {
		return fmt.Errorf("restore: %s is not a quarantine id", quote(id))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	q, err := e.readEntry(id)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := checkPath(q.OriginalPath); err != nil {
		return fmt.Errorf("restore %s: original path %w", id, err)
	}
	if _, err := os.Lstat(q.OriginalPath); err == nil {
		return fmt.Errorf("restore %s: %s: %w", id, q.OriginalPath, ErrExists)
	}
	if err := e.restoreFile(q); err != nil {
		return fmt.Errorf("restore %s to %s: %w", id, q.OriginalPath, err)
	}
	if err := os.RemoveAll(filepath.Join(e.qdir, id)); err != nil {
		return fmt.Errorf("restore %s: restored, but removing the quarantine entry failed: %w", id, err)
	}
	e.log.Warn("quarantined file restored", "quarantine_id", id, logkey.Path, q.OriginalPath)
	return syncDir(e.qdir)
}
