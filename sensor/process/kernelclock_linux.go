package process

import "github.com/tillwatch/tillwatch/sensor/procclock"

// kernelClock converts a kernel feed's CLOCK_MONOTONIC time to wall time.
var kernelClock = procclock.MonotonicToWall
