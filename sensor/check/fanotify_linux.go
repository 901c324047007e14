package check

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// probeFanotify opens and closes a fanotify group; it needs CAP_SYS_ADMIN.
func probeFanotify() error {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("fanotify_init: %w", err)
	}
	return unix.Close(fd)
}
