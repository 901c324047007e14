//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package filehash

import "os"

// version: no stable file identity here; digests are computed, not cached.
func version(os.FileInfo) (Version, bool) { return Version{}, false }
