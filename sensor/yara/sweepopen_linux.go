package yara

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// openForScan opens p for a batch scan with raw system calls: os.Open
// registers every descriptor with the network poller (four fcntl calls and
// a failing epoll_ctl for a regular file) and sets a finalizer, a cost per
// file that the yara CLI does not pay. O_NONBLOCK: a path swapped for a
// FIFO after the walk must not block the open; O_NOFOLLOW: nor become a
// link to elsewhere. It returns the descriptor, the file's size and
// owner, and its first bytes in head (n of them).
func openForScan(p string, head []byte) (fd int, size int64, uid uint32, n int, err error) {
	fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, 0, 0, 0, fmt.Errorf("open %s: %w", p, err)
	}
	var st unix.Stat_t
	if err = unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, 0, 0, fmt.Errorf("stat %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, 0, 0, 0, fmt.Errorf("%s: not a regular file", p)
	}
	if len(head) > 0 && st.Size > 0 {
		for n < len(head) && int64(n) < st.Size {
			m, rerr := unix.Pread(fd, head[n:], int64(n))
			if rerr == unix.EINTR {
				continue
			}
			if rerr != nil || m <= 0 {
				break // the scan reports an unreadable file
			}
			n += m
		}
	}
	return fd, st.Size, st.Uid, n, nil
}

func closeScanned(fd int) { unix.Close(fd) }
