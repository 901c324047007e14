//go:build !linux

package process

import (
	"context"
	"errors"
	"fmt"

	"github.com/tillwatch/tillwatch/internal/event"
)

// nlConn stands in for the Linux proc connector socket.
type nlConn struct{}

const rcvBufSize = 0

// Probe reports whether the netlink process connector works here. It is a
// Linux facility; elsewhere Probe returns an error wrapping
// errors.ErrUnsupported.
func Probe() error { return fmt.Errorf("netlink proc connector: %w", errors.ErrUnsupported) }

func openNetlink(int) (*nlConn, error) { return nil, Probe() }

func (s *Source) runNetlink(context.Context, *nlConn, func(event.Event)) error {
	return Probe()
}
