//go:build !cgo

package yara

import (
	"errors"
	"testing"
)

func TestDisabledWithoutCgo(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("New without cgo: %v, want ErrUnsupported", err)
	}
}
