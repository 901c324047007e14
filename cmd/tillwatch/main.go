// Command tillwatch is the analyst's and rule author's CLI: query alerts
// and hosts on a collector, and run the demo.
package main

import (
	"os"

	"github.com/tillwatch/tillwatch/internal/cli"
)

func main() {
	os.Exit(cli.Main("tillwatch", newRoot(os.Stdout, os.Stderr), os.Args[1:], os.Stderr))
}
