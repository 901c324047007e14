//go:build !linux

// Command yarabench compares the YARA sweep with the yara CLI; it reads
// Linux process accounting (getrusage, /proc), so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "yarabench: runs on Linux only")
	os.Exit(1)
}
