//go:build !linux

// Command rmmbench measures RMM detection latency; it drives a real sensor
// through /proc and the process connector, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "rmmbench: runs on Linux only")
	os.Exit(1)
}
