package fileactivity

import (
	"errors"
	"io/fs"
	"os"
)

// lstat never follows a symlink: a link to a directory outside the watched
// trees must not pull that directory in.
func lstat(p string) (os.FileInfo, error) { return os.Lstat(p) }

// gone reports an error for a folder that no longer exists when the source
// comes to walk or mark it: removed, or renamed (dpkg unpacks DIR.dpkg-new
// and renames it into place). No coverage is lost: the removal or rename
// has an event of its own, and a renamed folder is marked under its new
// name, so it is neither counted as lost nor reported as a degradation.
func gone(err error) bool { return err != nil && errors.Is(err, fs.ErrNotExist) }
