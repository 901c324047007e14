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

// OpenFile returns errors.ErrUnsupported.
func (d *Dir) OpenFile(string, int) (*os.File, error) { return nil, errors.ErrUnsupported }

// Rename returns errors.ErrUnsupported.
func (d *Dir) Rename(string, string) error { return errors.ErrUnsupported }

// Mkdir returns errors.ErrUnsupported.
func (d *Dir) Mkdir(string, os.FileMode) error { return errors.ErrUnsupported }

// RemoveDir returns errors.ErrUnsupported.
func (d *Dir) RemoveDir(string) error { return errors.ErrUnsupported }

// Private returns errors.ErrUnsupported.
func (d *Dir) Private(string) error { return errors.ErrUnsupported }

// Names returns errors.ErrUnsupported.
func (d *Dir) Names() ([]string, error) { return nil, errors.ErrUnsupported }
