package app

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// TestReferenceListsEveryFlagAndKey keeps docs/reference.md, the external
// contract, true: every flag of every collector subcommand and every config
// key must be named there. A failure names what to document.
func TestReferenceListsEveryFlagAndKey(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(doc, "`--"+f.Name) && !strings.Contains(doc, "--"+f.Name+" ") {
				t.Errorf("%s --%s is not in docs/reference.md", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(newRoot(io.Discard, io.Discard))
	for _, k := range cfgfile.Keys(config.Config{}) {
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("collector config key %s is not in docs/reference.md", k)
		}
	}
}
