// Command yarabench compares tillwatch's YARA scanner with the yara CLI on
// the same rules (rules/yara), the same generated corpus and the same
// thread count, in one run: it checks that both report exactly the same
// (file, rule) matches and writes throughput to the "## YARA" section of
// docs/benchmarks.md. Run with `make bench-yara`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/sensor/yara"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
)

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose YARA section is replaced")
	files := flag.Int("files", 2000, "corpus files")
	size := flag.Int("size", 100<<10, "bytes per file")
	threads := flag.Int("threads", runtime.NumCPU(), "scan threads for both scanners")
	runs := flag.Int("runs", 3, "timed runs of each scanner (the best counts)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this program (tillwatch's sweep runs in it; the CLI does not) to FILE")
	flag.Parse()
	stop := func() {}
	if *cpuprofile != "" {
		var err error
		if stop, err = benchproc.StartCPUProfile(*cpuprofile); err != nil {
			fmt.Fprintln(os.Stderr, "yarabench: "+err.Error())
			os.Exit(1)
		}
	}
	err := run(*out, *files, *size, *threads, *runs)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "yarabench: "+err.Error())
		os.Exit(1)
	}
}

func run(out string, nfiles, size, threads, runs int) error {
	cli, err := exec.LookPath("yara")
	if err != nil {
		return fmt.Errorf("the yara CLI is needed: apt-get install -y yara")
	}
	ruleFiles, _ := filepath.Glob("rules/yara/*.yar")
	if len(ruleFiles) == 0 {
		return fmt.Errorf("run from the repository root (no rules/yara/*.yar)")
	}
	corpus, err := os.MkdirTemp("", "yarabench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(corpus)
	total, planted, err := makeCorpus(corpus, nfiles, size)
	if err != nil {
		return err
	}
	var srcs []yara.Source
	for _, f := range ruleFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		srcs = append(srcs, yara.Source{Name: f, Text: b, Namespace: "default"})
	}
	rules, err := yara.Compile(srcs)
	if err != nil {
		return err
	}
	// Both get the externals defined empty: the CLI cannot set them per
	// file, and no corpus file depends on them.
	args := []string{"-r", "-p", fmt.Sprint(threads)}
	for _, x := range []string{yara.ExtFilename, yara.ExtFilepath, yara.ExtExtension, yara.ExtFiletype, yara.ExtOwner} {
		args = append(args, "-d", x+"=")
	}
	args = append(append(args, ruleFiles...), corpus)

	var cliBest, ourBest time.Duration
	var cliSet, ourSet []string
	for i := 0; i <= runs; i++ { // run 0 warms the page cache, untimed
		t0 := time.Now()
		o, err := exec.Command(cli, args...).Output()
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("yara CLI: %w", err)
		}
		cliSet = parseCLI(o)
		if i > 0 && (cliBest == 0 || d < cliBest) {
			cliBest = d
		}
		t0 = time.Now()
		var got []string
		_, err = yara.SweepRules(context.Background(), rules, []string{corpus}, yara.SweepOptions{Threads: threads}, func(r yara.Result, err error) {
			for _, m := range r.Matches {
				got = append(got, m.Rule+" "+r.Path)
			}
		})
		d = time.Since(t0)
		if err != nil {
			return err
		}
		sort.Strings(got)
		ourSet = got
		if i > 0 && (ourBest == 0 || d < ourBest) {
			ourBest = d
		}
	}
	identical := strings.Join(cliSet, "\n") == strings.Join(ourSet, "\n")
	mb := float64(total) / (1 << 20)
	ratio := cliBest.Seconds() / ourBest.Seconds()
	section := fmt.Sprintf(`## YARA

Measured by `+"`make bench-yara`"+` (bench/yarabench) on %s: %d rules from rules/yara, a generated corpus of
%d files (%.0f MiB, %d planted positive samples), %d threads for both, best of %d runs after a warm-up run
(page cache warm). libyara %s through go-yara (tillwatch) against the yara %s CLI (`+"`yara -r -p %d`"+`).

| scanner | time | MB/s | files/s | matches |
| --- | --- | --- | --- | --- |
| yara CLI | %.2fs | %.1f | %.0f | %d |
| tillwatch (sensor/yara sweep) | %.2fs | %.1f | %.0f | %d |

Throughput ratio tillwatch / CLI: **%.2fx** (goal >= 0.95x). Match sets identical: **%v**.
`, time.Now().UTC().Format("2006-01-02"), rules.Len(), nfiles+planted, mb, planted, threads, runs, yara.Version(), cliVersion(cli), threads,
		cliBest.Seconds(), mb/cliBest.Seconds(), float64(nfiles+planted)/cliBest.Seconds(), len(cliSet),
		ourBest.Seconds(), mb/ourBest.Seconds(), float64(nfiles+planted)/ourBest.Seconds(), len(ourSet),
		ratio, identical)
	fmt.Print(section)
	if err := benchdoc.WriteSection(out, "## YARA", section); err != nil {
		return err
	}
	if !identical {
		return fmt.Errorf("match sets differ: CLI %d, tillwatch %d", len(cliSet), len(ourSet))
	}
	return nil
}

// makeCorpus writes pseudo-random text files (fixed seed: the same corpus
// every run) and plants the rules' positive samples that need no
// externals. It returns the corpus size in bytes and the planted count.
func makeCorpus(dir string, n, size int) (int64, int, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the till receipt payment card store cashier loyalty backup printer network update invoice total tax vat drawer scanner barcode price discount")
	var total int64
	buf := make([]byte, 0, size+64)
	for i := range n {
		buf = buf[:0]
		for len(buf) < size {
			buf = append(buf, words[rng.IntN(len(words))]...)
			buf = append(buf, ' ')
			if rng.IntN(12) == 0 {
				buf = append(buf, byte(rng.IntN(256)))
			}
		}
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%50))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return 0, 0, err
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.dat", i)), buf[:size], 0o644); err != nil {
			return 0, 0, err
		}
		total += int64(size)
	}
	samples, _ := filepath.Glob("rules/yara/tests/*/positive/*")
	planted := 0
	for _, s := range samples {
		if strings.Contains(s, "renamed_tools") {
			continue // depends on the filename external
		}
		b, err := os.ReadFile(s)
		if err != nil {
			return 0, 0, err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("planted-%d-%s", planted, filepath.Base(s))), b, 0o644); err != nil {
			return 0, 0, err
		}
		total += int64(len(b))
		planted++
	}
	return total, planted, nil
}

var cliLine = regexp.MustCompile(`^(\S+) (.+)$`)

func parseCLI(o []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(o))
	for sc.Scan() {
		if m := cliLine.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, m[1]+" "+m[2])
		}
	}
	sort.Strings(out)
	return out
}

func cliVersion(cli string) string {
	o, err := exec.Command(cli, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(o))
}
