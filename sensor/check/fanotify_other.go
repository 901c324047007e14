//go:build !linux

package check

import "errors"

func probeFanotify() error { return errors.ErrUnsupported }
