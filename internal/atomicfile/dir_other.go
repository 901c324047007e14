//go:build !linux

package atomicfile

import (
	"errors"
	"os"
)

// Dir is unsupported off Linux: the sensor writes into user-writable
// folders only where it can do so relative to an opened directory.
type Dir struct{}

// OpenDir returns errors.ErrUnsupported.
func OpenDir(string) (*Dir, error) { return nil, errors.ErrUnsupported }

// Path returns "".
func (d *Dir) Path() string { return "" }

// Close does nothing.
func (d *Dir) Close() error { return nil }

// Write returns errors.ErrUnsupported.
func (d *Dir) Write(string, []byte, os.FileMode) error { return errors.ErrUnsupported }

// OpenRegular returns errors.ErrUnsupported.
func (d *Dir) OpenRegular(string) (*os.File, error) { return nil, errors.ErrUnsupported }

// ReadRegular returns errors.ErrUnsupported.
func (d *Dir) ReadRegular(string, int64) ([]byte, error) { return nil, errors.ErrUnsupported }

// Remove returns errors.ErrUnsupported.
func (d *Dir) Remove(string) error { return errors.ErrUnsupported }
