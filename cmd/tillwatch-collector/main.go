// Command tillwatch-collector receives, stores and serves what tillwatch
// sensors send. All logic lives in collector/app.
package main

import (
	"os"

	"github.com/tillwatch/tillwatch/collector/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
