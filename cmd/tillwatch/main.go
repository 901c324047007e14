// Command tillwatch is the analyst's and rule author's CLI: query alerts
// and hosts on a collector, and run the demo.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tillwatch: "+cfgfile.OneLine(err))
	}
	os.Exit(cfgfile.ExitCode(err))
}
