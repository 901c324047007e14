//go:build linux

// Command profcollector is tillwatch-collector with Go's CPU profiler
// attached, for ingestbench's and fleetbench's -profile flag: the same
// collector/app.Main as cmd/tillwatch-collector. With -cpuprofile FILE as
// its first two arguments it profiles the whole run (written when the
// collector stops on SIGTERM); the rest of the command line is the
// collector's. Read the profile with `go tool pprof -top FILE`.
package main

import (
	"fmt"
	"os"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/collector/app"
)

func main() {
	args := os.Args[1:]
	if len(args) >= 2 && args[0] == "-cpuprofile" {
		stop, err := benchproc.StartCPUProfile(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "profcollector: "+err.Error())
			os.Exit(1)
		}
		code := app.Main(args[2:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(app.Main(args, os.Stdout, os.Stderr))
}
