package procclock

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMonotonicToWall checks the conversion the proc connector and the
// kernel layer share: a monotonic stamp a second old is a second ago, one
// in the future is now (never a time that has not happened).
func TestMonotonicToWall(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	now := uint64(ts.Nano())
	tests := []struct {
		name string
		ns   uint64
		ago  time.Duration
	}{
		{"a second ago", now - uint64(time.Second), time.Second},
		{"in the future", now + uint64(time.Hour), 0},
	}
	for _, tc := range tests {
		got := time.Since(MonotonicToWall(tc.ns))
		if d := got - tc.ago; d < -50*time.Millisecond || d > 500*time.Millisecond {
			t.Errorf("%s: %v ago, want about %v", tc.name, got, tc.ago)
		}
	}
}
