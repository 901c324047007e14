//go:build !linux

// Command kernelcost measures the eBPF kernel layer's cost; Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "kernelcost: the kernel layer is eBPF on Linux")
	os.Exit(1)
}
