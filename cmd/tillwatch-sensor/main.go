// Command tillwatch-sensor is the endpoint agent: it watches processes,
// files and remote-management agents, raises alerts, stops attacks locally
// and ships alerts to the collector. On Windows it
// also runs as a service (service_windows.go).
package main

import (
	"os"

	"github.com/tillwatch/tillwatch/internal/cli"
)

func main() {
	if code, ok := runService(os.Args[1:]); ok {
		os.Exit(code)
	}
	os.Exit(cli.Main("tillwatch-sensor", newRoot(os.Stdout, os.Stderr), os.Args[1:], os.Stderr))
}
