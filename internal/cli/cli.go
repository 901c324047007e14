// Package cli runs a binary's cobra root the way every tillwatch binary
// must behave: cancelled on SIGINT/SIGTERM, errors printed as one line
// "<binary>: <message>", exit 0 on success, 1 when a command's own work
// failed, 2 for usage and configuration problems — including cobra's own
// errors (unknown command, wrong arguments).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// Main executes root with args and returns the exit code.
func Main(name string, root *cobra.Command, args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Execute(ctx, root, args)
	if err != nil {
		fmt.Fprintln(stderr, name+": "+cfgfile.OneLine(err))
	}
	return ExitCode(err)
}

// Execute runs root with args: Main without signals and exit codes, for tests.
func Execute(ctx context.Context, root *cobra.Command, args []string) error {
	markRuntime(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cfgfile.Usage(err) })
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// runtimeError marks an error returned by a command's own work.
type runtimeError struct{ err error }

func (e runtimeError) Error() string { return e.err.Error() }
func (e runtimeError) Unwrap() error { return e.err }

// markRuntime wraps every command's RunE so that its errors, unless they are
// usage errors, count as runtime failures; errors cobra raises itself stay
// unmarked and so map to usage.
func markRuntime(c *cobra.Command) {
	if fn := c.RunE; fn != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := fn(cmd, args)
			var ue *cfgfile.UsageError
			var re runtimeError
			if err == nil || errors.As(err, &ue) || errors.As(err, &re) {
				return err
			}
			return runtimeError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRuntime(sub)
	}
}

// ExitCode maps an error from Execute to the exit code.
func ExitCode(err error) int {
	if err == nil {
		return cfgfile.ExitOK
	}
	var ue *cfgfile.UsageError
	if errors.As(err, &ue) {
		return cfgfile.ExitUsage
	}
	var re runtimeError
	if errors.As(err, &re) {
		return cfgfile.ExitRuntime
	}
	return cfgfile.ExitUsage
}
