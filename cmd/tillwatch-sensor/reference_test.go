package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/sensor/config"
)

// TestReferenceListsEveryFlagAndKey keeps docs/reference.md, the external
// contract, true: every flag of run and check and every config key must be
// named there. A failure names what to document.
func TestReferenceListsEveryFlagAndKey(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	root := newRoot(io.Discard, io.Discard)
	for _, c := range root.Commands() {
		if c.Name() != "run" && c.Name() != "check" {
			continue
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(doc, "`--"+f.Name) && !strings.Contains(doc, "--"+f.Name+" ") {
				t.Errorf("tillwatch-sensor %s --%s is not in docs/reference.md", c.Name(), f.Name)
			}
		})
	}
	for _, k := range cfgfile.Keys(config.Config{}) {
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("sensor config key %s is not in docs/reference.md", k)
		}
	}
}
