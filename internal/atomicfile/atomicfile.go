// Package atomicfile replaces small state files (identity, baselines,
// replay caches, kill-switch state) so that a crash or power loss leaves
// either the old or the new content, never a torn file. Dir does the same,
// and reads, renames and removes, relative to a directory opened without
// following a user's symlink: for writes root makes in folders other users
// can write (decoys, restored quarantine, simulators).
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Write replaces path with data: a temp file beside it with mode perm,
// written and fsynced, renamed over path, then the directory fsynced so the
// rename itself survives a power loss. The directory must exist.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: some filesystems refuse fsync on directories
		d.Close()
	}
	return nil
}

// ErrNotRegular: a Dir read found something other than a regular file
// (a symlink is refused earlier, by O_NOFOLLOW).
var ErrNotRegular = errors.New("not a regular file")
