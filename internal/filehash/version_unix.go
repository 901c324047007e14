//go:build linux || darwin || freebsd || netbsd || openbsd

package filehash

import (
	"os"
	"syscall"
)

func version(fi os.FileInfo) (Version, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Version{}, false
	}
	return Version{Dev: uint64(st.Dev), Ino: uint64(st.Ino), MtimeNs: fi.ModTime().UnixNano(), CtimeNs: ctime(st)}, true
}
