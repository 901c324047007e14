package cli

import (
	"context"
	"errors"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

func root(runErr error) *cobra.Command {
	r := &cobra.Command{Use: "x", SilenceErrors: true, SilenceUsage: true}
	r.AddCommand(&cobra.Command{Use: "do", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return runErr }})
	r.Commands()[0].Flags().Bool("flag", false, "")
	return r
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		runErr error
		args   []string
		want   int
	}{
		{"success", nil, []string{"do"}, 0},
		{"runtime failure", errors.New("collector unreachable"), []string{"do"}, 1},
		{"usage error from the command", cfgfile.Usagef("bad key"), []string{"do"}, 2},
		{"unknown command", nil, []string{"nope"}, 2},
		{"unexpected argument", nil, []string{"do", "extra"}, 2},
		{"unknown flag", nil, []string{"do", "--nope"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := Execute(context.Background(), root(tc.runErr), tc.args)
			if got := ExitCode(err); got != tc.want {
				t.Errorf("exit %d (err %v), want %d", got, err, tc.want)
			}
		})
	}
}
