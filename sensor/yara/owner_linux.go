package yara

import (
	"io/fs"
	"syscall"
)

// fileUID is the owner uid of fi, ok false when the OS does not say.
func fileUID(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}
