//go:build !linux

package action

import "context"

// Service control (systemd) is Linux only; a Windows service manager
// implementation slots in as services_windows.go.
const supportsServices = false

func (e *Executor) systemdRunning() bool { return false }

func (e *Executor) disableServices(context.Context, []string, *disabledProduct) ([]string, []string, error) {
	return nil, nil, ErrUnsupported
}

func (e *Executor) unmaskServices(*disabledProduct) ([]string, []string, error) {
	return nil, nil, ErrUnsupported
}

func (e *Executor) restartServices(context.Context, *disabledProduct) ([]string, error) {
	return nil, ErrUnsupported
}
