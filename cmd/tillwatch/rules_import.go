package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/rules"
	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// rulesImportCmd converts community content as published into a rule
// folder the sensor loads with --rules and `rules bundle` packs.
func rulesImportCmd(stdout io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "import", Short: "Bring community rules (SigmaHQ, LOLRMM) into a rule folder, reporting what was taken and why not"}
	var out, oses, name string
	sig := &cobra.Command{
		Use:   "sigma SRC",
		Short: "Take the Sigma rules under SRC (e.g. a SigmaHQ checkout's rules/) that a sensor can run; files are copied unedited",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return importSigma(stdout, args[0], out, name, strings.Split(oses, ","))
		},
	}
	sig.Flags().StringVar(&out, "out", "", "rule folder to write into (its sigma/NAME/ is replaced)")
	sig.Flags().StringVar(&oses, "os", "linux,windows", "operating systems of the fleet: rules for others are not taken")
	sig.Flags().StringVar(&name, "name", "", "subfolder under sigma/ (default: SRC's base name)")
	var lout string
	lol := &cobra.Command{
		Use:   "lolrmm SRC",
		Short: "Convert the LOLRMM catalogue's YAML files under SRC (a LOLRMM checkout's yaml/) into rmm/catalog-lolrmm.yaml",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return importLOLRMM(stdout, args[0], lout)
		},
	}
	lol.Flags().StringVar(&lout, "out", "", "rule folder to write into (its rmm/catalog-lolrmm.yaml is replaced)")
	c.AddCommand(sig, lol)
	return c
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkImportArgs(src, out string) error {
	if out == "" {
		return cfgfile.Usagef("--out DIR is required (the rule folder to write, e.g. ./community-rules)")
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return cfgfile.Usagef("%s is not a folder", src)
	}
	return nil
}

func importSigma(w io.Writer, src, out, name string, oses []string) error {
	if err := checkImportArgs(src, out); err != nil {
		return err
	}
	if name == "" {
		abs, _ := filepath.Abs(src)
		name = filepath.Base(abs)
	}
	if !safeName.MatchString(name) {
		return cfgfile.Usagef("--name %q: use letters, digits, dot, dash, underscore", name)
	}
	for _, o := range oses {
		if o != "linux" && o != "windows" && o != "darwin" {
			return cfgfile.Usagef("--os %q: want linux, windows or darwin", o)
		}
	}
	builtin, _ := sigmadetect.LoadDir(rules.Builtin, "sigma")
	known := map[string]bool{}
	for _, r := range builtin {
		known[r.ID] = true
	}
	srcFS := os.DirFS(src)
	items := sigmadetect.Import(srcFS, ".", oses, known)
	dest := filepath.Join(out, "sigma", name)
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	counts := map[string]int{}
	reasons := map[string]map[string]int{}
	var report strings.Builder
	fmt.Fprintf(&report, "tillwatch rules import sigma %s (for %s)\n\n", src, strings.Join(oses, ", "))
	for _, it := range items {
		counts[it.Outcome]++
		if it.Outcome != sigmadetect.ImportTaken {
			if reasons[it.Outcome] == nil {
				reasons[it.Outcome] = map[string]int{}
			}
			reasons[it.Outcome][sigmadetect.ImportReasonClass(it.Reason)]++
			fmt.Fprintf(&report, "%s\t%s\t%s\n", it.Outcome, it.File, it.Reason)
			continue
		}
		raw, err := fs.ReadFile(srcFS, it.File)
		if err != nil {
			return err
		}
		to := filepath.Join(dest, filepath.FromSlash(path.Clean(it.File)))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(to, raw, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&report, "taken\t%s\n", it.File)
	}
	summary := fmt.Sprintf("sigma import: %d rule files: %d taken into %s, %d for another OS, %d not applicable, %d errors",
		len(items), counts[sigmadetect.ImportTaken], dest, counts[sigmadetect.ImportOtherOS], counts[sigmadetect.ImportNotApplicable], counts[sigmadetect.ImportError])
	fmt.Fprintln(w, summary)
	printReasons(w, reasons)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	reportFile := filepath.Join(out, "import-sigma-"+name+".txt")
	fmt.Fprintf(w, "per-file report: %s\n", reportFile)
	return os.WriteFile(reportFile, []byte(summary+"\n\n"+report.String()), 0o644)
}

// printReasons prints the not-taken counts by reason, largest first.
func printReasons(w io.Writer, reasons map[string]map[string]int) {
	outcomes := make([]string, 0, len(reasons))
	for o := range reasons {
		outcomes = append(outcomes, o)
	}
	sort.Strings(outcomes)
	for _, o := range outcomes {
		type kv struct {
			k string
			n int
		}
		var kvs []kv
		for k, n := range reasons[o] {
			kvs = append(kvs, kv{k, n})
		}
		sort.Slice(kvs, func(i, j int) bool { return kvs[i].n > kvs[j].n || kvs[i].n == kvs[j].n && kvs[i].k < kvs[j].k })
		for i, e := range kvs {
			if i == 12 {
				fmt.Fprintf(w, "  %s: ... %d more reasons (see the report)\n", o, len(kvs)-i)
				break
			}
			fmt.Fprintf(w, "  %s: %5d  %s\n", o, e.n, e.k)
		}
	}
}

func importLOLRMM(w io.Writer, src, out string) error {
	if err := checkImportArgs(src, out); err != nil {
		return err
	}
	known, err := rmm.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		return err
	}
	res, err := rmm.ConvertLOLRMM(os.DirFS(src), ".", known)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	var products []rmm.Product
	var report strings.Builder
	reasons := map[string]map[string]int{"not taken": {}}
	linux := 0
	for _, r := range res {
		if r.Product == nil {
			reasons["not taken"][strings.SplitN(r.Reason, " as ", 2)[0]]++
			fmt.Fprintf(&report, "not taken\t%s\t%s\t%s\n", r.File, r.Name, r.Reason)
			continue
		}
		products = append(products, *r.Product)
		if r.Product.Linux != nil {
			linux++
		}
		fmt.Fprintf(&report, "taken\t%s\t%s -> %s\n", r.File, r.Name, r.Product.ID)
		for _, t := range r.Taken {
			fmt.Fprintf(&report, "\t+ %s\n", t)
		}
		for _, n := range r.NotTaken {
			fmt.Fprintf(&report, "\t- %s\n", n)
		}
	}
	dir := filepath.Join(out, "rmm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	body, err := rmm.MarshalCatalog("Converted from the LOLRMM catalogue (lolrmm.io) by `tillwatch rules import lolrmm`.\n"+
		"Regenerate rather than edit; what was not taken and why: ../import-lolrmm.txt", products)
	if err != nil {
		return err
	}
	file := filepath.Join(dir, "catalog-lolrmm.yaml")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		return err
	}
	// What was written must load on top of the built-in catalog.
	more, err := rmm.LoadCatalog(os.DirFS(dir), ".")
	if err == nil {
		err = known.Merge(more)
	}
	if err != nil {
		return fmt.Errorf("the converted catalog does not load (a bug; please report): %w", err)
	}
	summary := fmt.Sprintf("lolrmm import: %d tools: %d taken into %s (%d with Linux recognisers), %d not taken",
		len(res), len(products), file, linux, len(res)-len(products))
	fmt.Fprintln(w, summary)
	printReasons(w, reasons)
	reportFile := filepath.Join(out, "import-lolrmm.txt")
	fmt.Fprintf(w, "per-tool report: %s\n", reportFile)
	return os.WriteFile(reportFile, []byte(summary+"\n\n"+report.String()), 0o644)
}
