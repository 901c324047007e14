package process

// kernelClock converts a kernel feed's CLOCK_MONOTONIC time to wall time.
var kernelClock = monoToWall
