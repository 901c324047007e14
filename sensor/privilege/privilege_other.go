//go:build !linux

package privilege

import "errors"

// Effective is not available off Linux: capabilities are a Linux concept.
func Effective(string) (Set, error) { return 0, errors.ErrUnsupported }
