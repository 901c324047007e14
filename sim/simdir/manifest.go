package simdir

import (
	"fmt"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
)

// ReadManifest reads the manifest name in the simulator folder dir, which
// other users may be able to write. A simulator's undo acts on what its
// manifest lists as root, so the manifest is trusted only if it is a
// regular file owned by the user running the simulator, private (0600),
// with one link: a user can replace it, but cannot make a file that
// passes. It returns dir as Check cleaned it; the caller still checks that
// the manifest names that folder.
func ReadManifest(dir, name string, max int64) (string, []byte, error) {
	dir, err := Check(dir)
	if err != nil {
		return "", nil, err
	}
	top, err := atomicfile.OpenDir(dir)
	if err != nil {
		return "", nil, err
	}
	defer top.Close()
	b, err := top.ReadRegular(name, max)
	if err != nil {
		return "", nil, fmt.Errorf("%s has no manifest (%w): run without --undo first", dir, err)
	}
	if err := top.Private(name); err != nil {
		return "", nil, fmt.Errorf("manifest not trusted: %w", err)
	}
	return dir, b, nil
}
