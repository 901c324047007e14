package check

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// probeFanotify says what the kernel's fanotify offers the file-activity
// source (it needs CAP_SYS_ADMIN): a group at all, permission events (the
// synchronous stop of an encryptor and of decoy writers), FID reporting
// (creates, deletes and renames with the acting process, kernel >= 5.9) and,
// per watched folder, whether its file system takes a filesystem mark for
// name events (else each folder is marked). Every group and mark made is
// gone when it returns.
func probeFanotify(watch []string) (bool, string) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY)
	if err != nil {
		return false, fmt.Sprintf("fanotify_init: %v (file activity falls back to fsnotify: no acting process, nothing stopped)", err)
	}
	_ = unix.Close(fd)
	var parts []string
	if fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC, unix.O_RDONLY); err == nil {
		_ = unix.Close(fd)
		parts = append(parts, "permission events yes")
	} else {
		parts = append(parts, fmt.Sprintf("permission events NO (%v: encryptors stopped after the fact)", err))
	}
	fid, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY)
	if err != nil {
		parts = append(parts, fmt.Sprintf("create/delete/rename NO (%v: kernel >= 5.9 needed)", err))
		return true, strings.Join(parts, "; ")
	}
	defer unix.Close(fid)
	parts = append(parts, "create/delete/rename yes")
	for _, dir := range watch {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			parts = append(parts, fmt.Sprintf("%s: not a folder here", dir))
			continue
		}
		err := unix.FanotifyMark(fid, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_CREATE|unix.FAN_DELETE|unix.FAN_ONDIR, unix.AT_FDCWD, dir)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: name events per folder (filesystem mark refused: %v)", dir, err))
			continue
		}
		_ = unix.FanotifyMark(fid, unix.FAN_MARK_FLUSH|unix.FAN_MARK_FILESYSTEM, 0, unix.AT_FDCWD, "/")
		parts = append(parts, dir+": name events from a filesystem mark")
	}
	return true, strings.Join(parts, "; ")
}
