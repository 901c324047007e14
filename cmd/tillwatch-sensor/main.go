// Command tillwatch-sensor is the endpoint agent: it watches processes (and,
// as features land, files and remote-management agents), raises alerts,
// stops attacks locally and ships alerts to the collector.
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
		fmt.Fprintln(os.Stderr, "tillwatch-sensor: "+cfgfile.OneLine(err))
	}
	os.Exit(cfgfile.ExitCode(err))
}
