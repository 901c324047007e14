package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/sensor/detect/execpath"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/yara"
)

// ruleKind is one kind of rule `tillwatch rules lint|test` checks: its
// folder in a rule tree and two checks returning problems as
// "file[:line]: reason". Adding a kind (Sigma, RMM, ...) is one line in
// ruleKinds.
type ruleKind struct {
	name string
	lint func(dir string) ([]string, error)
	test func(dir string) ([]string, error)
}

func ruleKinds() []ruleKind {
	return []ruleKind{
		{"exec", lintExec, lintExec}, // exec rules carry their samples inline; loading checks them
		{"yara", lintYARA, testYARA},
		{"rmm", lintRMM, lintRMM}, // catalog and behaviour rules; samples are checked at load
		{"sigma", lintSigma, testSigma},
		{"ransomware", lintRansomware, lintRansomware}, // thresholds; a sensor refuses a bundle whose thresholds do not load
	}
}

func rulesCmd(stdout io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "rules", Short: "Lint, test and bundle rule folders (rule authors; CI runs the same checks)"}
	c.AddCommand(rulesBundleCmd(stdout), rulesImportCmd(stdout))
	for _, mode := range []string{"lint", "test"} {
		short := "Compile every rule and check its metadata"
		if mode == "test" {
			short = "Lint, then run every rule's positive and negative samples"
		}
		c.AddCommand(&cobra.Command{
			Use: mode + " [DIR]", Short: short + " (DIR: a rule tree such as ./rules; default ./rules)",
			Args: cobra.MaximumNArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				dir := "rules"
				if len(args) == 1 {
					dir = args[0]
				}
				return runRules(stdout, dir, mode == "test")
			},
		})
	}
	return c
}

// runRules runs every kind present under dir and prints each problem on
// its own line; any problem fails the command (exit 1).
func runRules(w io.Writer, dir string, test bool) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return cfgfile.Usagef("%s is not a rule folder (give the rule tree, e.g. ./rules)", dir)
	}
	found, problems := 0, 0
	for _, k := range ruleKinds() {
		sub := filepath.Join(dir, k.name)
		if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
			continue
		}
		found++
		ps, err := k.lint(sub)
		if err == nil && len(ps) == 0 && test {
			ps, err = k.test(sub)
		}
		if err != nil {
			ps = append(ps, sub+": "+cfgfile.OneLine(err))
		}
		bad := 0
		for _, p := range ps {
			fmt.Fprintln(w, p)
			if !isNote(p) {
				bad++
			}
		}
		problems += bad
		if bad == 0 {
			fmt.Fprintf(w, "%s: ok (%s)\n", k.name, sub)
		}
	}
	if found == 0 {
		var names []string
		for _, k := range ruleKinds() {
			names = append(names, k.name+"/")
		}
		return cfgfile.Usagef("%s holds no rule folder (%s)", dir, strings.Join(names, ", "))
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s) in %s", problems, dir)
	}
	return nil
}

// isNote reports whether a lint line is information (a warning, a rule
// skipped as not applicable, a summary) rather than a problem that fails
// the command.
func isNote(line string) bool {
	for _, m := range []string{": warning: ", ": skipped: ", ": note: "} {
		if strings.Contains(line, m) {
			return true
		}
	}
	return false
}

func lintExec(dir string) ([]string, error) {
	_, err := execpath.LoadRules(os.DirFS(filepath.Dir(dir)), filepath.Base(dir))
	if err == nil {
		return nil, nil
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, filepath.Join(filepath.Dir(dir), line))
	}
	return out, nil
}

func lintRansomware(dir string) ([]string, error) {
	_, err := ransomware.LoadRules(os.DirFS(filepath.Dir(dir)), filepath.Base(dir))
	return nil, err
}

func lintYARA(dir string) ([]string, error) {
	ps, err := yara.Lint(dir)
	return problemStrings(ps), disabledOK(err)
}

func testYARA(dir string) ([]string, error) {
	ps, err := yara.TestSamples(dir)
	return problemStrings(ps), disabledOK(err)
}

// disabledOK names a build without YARA as the reason.
func disabledOK(err error) error {
	if errors.Is(err, errors.ErrUnsupported) {
		return errors.New("cannot check YARA rules: this tillwatch was built without cgo")
	}
	return err
}

func problemStrings(ps []yara.Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
