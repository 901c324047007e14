//go:build linux

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
	"syscall"
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
	runs := flag.Int("runs", 5, "timed runs of each scanner, taken in turn (medians reported)")
	public := flag.String("public", "", "folder of public .yar files (e.g. a signature-base checkout's yara/) for the scan command's table; its first -public-files files in name order are used (default: rules/yara)")
	publicFiles := flag.Int("public-files", 40, "rule files taken from -public")
	scanFiles := flag.Int("scan-files", 4500, "files in the scan command's corpus")
	bin := flag.String("bin", "bin/tillwatch", "the tillwatch binary whose scan command is measured (make build)")
	baseline := flag.String("baseline", "", "an earlier tillwatch binary measured in the same rounds (before/after)")
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
	err := run(*out, *files, *size, *threads, *runs, scanConfig{public: *public, publicFiles: *publicFiles, files: *scanFiles, bin: *bin, baseline: *baseline})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "yarabench: "+err.Error())
		os.Exit(1)
	}
}

// scanConfig is the scan command's table: `tillwatch scan` against
// `yara -r -p N` as processes, each compiling its rules every run.
type scanConfig struct {
	public      string
	publicFiles int
	files       int
	bin         string
	baseline    string
}

// timing is one timed run: wall time and the CPU (user + system) it used.
type timing struct{ wall, cpu time.Duration }

// medians of a scanner's runs.
func medians(ts []timing) timing {
	var w, c []time.Duration
	for _, t := range ts {
		w, c = append(w, t.wall), append(c, t.cpu)
	}
	return timing{benchproc.Median(w), benchproc.Median(c)}
}

func runProcess(name string, args []string, env []string) (timing, []byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	o, err := cmd.Output()
	d := time.Since(t0)
	if err != nil {
		return timing{}, nil, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return timing{d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, o, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(out string, nfiles, size, threads, runs int, sc scanConfig) error {
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

	sweep := func(fileByFile bool) (timing, []string, error) {
		var got []string
		c0, t0 := selfCPU(), time.Now()
		_, err := yara.SweepRules(context.Background(), rules, []string{corpus}, yara.SweepOptions{Threads: threads, FileByFile: fileByFile}, func(r yara.Result, err error) {
			for _, m := range r.Matches {
				got = append(got, m.Rule+" "+r.Path)
			}
		})
		t := timing{time.Since(t0), selfCPU() - c0}
		sort.Strings(got)
		return t, got, err
	}
	var cliT, batchT, fileT []timing
	var cliSet, ourSet, fileSet []string
	for i := 0; i <= runs; i++ { // round 0 warms the page cache, untimed
		t, o, err := runProcess(cli, args, nil)
		if err != nil {
			return err
		}
		cliSet = parseCLI(o)
		tb, got, err := sweep(false)
		if err != nil {
			return err
		}
		ourSet = got
		tf, got, err := sweep(true)
		if err != nil {
			return err
		}
		fileSet = got
		if i > 0 {
			cliT, batchT, fileT = append(cliT, t), append(batchT, tb), append(fileT, tf)
		}
	}
	identical := strings.Join(cliSet, "\n") == strings.Join(ourSet, "\n") && strings.Join(cliSet, "\n") == strings.Join(fileSet, "\n")
	mb := float64(total) / (1 << 20)
	nf := float64(nfiles + planted)
	c, b, f := medians(cliT), medians(batchT), medians(fileT)
	row := func(name string, t timing, n int) string {
		return fmt.Sprintf("| %s | %.2fs | %.1f | %.0f | %.2fs | %d | **%.2fx** | %.2fx |\n", name, t.wall.Seconds(), mb/t.wall.Seconds(), nf/t.wall.Seconds(), t.cpu.Seconds(), n, c.wall.Seconds()/t.wall.Seconds(), c.cpu.Seconds()/t.cpu.Seconds())
	}
	section := fmt.Sprintf(`## YARA

Measured by `+"`make bench-yara`"+` (bench/yarabench, `+"`%s`"+`) on %s: %s; load average %s before, %s after.
The machine is shared with other work while measured, so the scanners run in turn, round after round (%d timed rounds
after an untimed one that warms the page cache), and the tables give medians and ratios of the same rounds.
Throughput ratio = the CLI's time / ours (above 1: faster than the CLI); CPU ratio = the CLI's CPU time (user +
system) / ours, the less load-dependent of the two.

### Sweep (sensor/yara, in process) against the CLI

%d rules from rules/yara, a generated corpus of %d files (%.0f MiB, %d planted positive samples), %d threads for
both. libyara %s through go-yara, linked as `+"`go run`"+` links it (the shared library, as the CLI), against the yara %s
CLI (`+"`yara -r -p %d`"+`). "batched" is the sweep as it is: files scanned 32 to a call into libyara, matches recorded
in C; "file by file" is the same sweep with one call per file (`+"`SweepOptions.FileByFile`"+`, the path before).

| scanner | time (median) | MB/s | files/s | CPU | matches | throughput ratio | CPU ratio |
| --- | --- | --- | --- | --- | --- | --- | --- |
| yara CLI | %.2fs | %.1f | %.0f | %.2fs | %d | 1.00x | 1.00x |
`, commandLine(), time.Now().UTC().Format("2006-01-02"), benchproc.Machine(), loadBefore, benchproc.LoadAvg("/proc"), runs,
		rules.Len(), nfiles+planted, mb, planted, threads, yara.Version(), cliVersion(cli), threads,
		c.wall.Seconds(), mb/c.wall.Seconds(), nf/c.wall.Seconds(), c.cpu.Seconds(), len(cliSet))
	section += row("tillwatch sweep, batched", b, len(ourSet))
	section += row("tillwatch sweep, file by file (before)", f, len(fileSet))
	section += fmt.Sprintf("\nGoal: throughput ratio >= 0.95x. Match sets identical (CLI, batched, file by file): **%v**.\n", identical)
	if !identical {
		fmt.Print(section)
		return fmt.Errorf("match sets differ: CLI %d, batched %d, file by file %d", len(cliSet), len(ourSet), len(fileSet))
	}
	scanSection, err := runScan(cli, sc, threads, runs)
	if err != nil {
		return err
	}
	section += scanSection
	fmt.Print(section)
	return benchdoc.WriteSection(out, "## YARA", section)
}

var loadBefore = benchproc.LoadAvg("/proc")

func commandLine() string {
	return "go run ./bench/yarabench " + strings.Join(os.Args[1:], " ")
}

// runScan measures `tillwatch scan` against the yara CLI as processes.
func runScan(cli string, sc scanConfig, threads, runs int) (string, error) {
	if _, err := os.Stat(sc.bin); err != nil {
		return "", fmt.Errorf("%s: %w (make build)", sc.bin, err)
	}
	tmp, err := os.MkdirTemp("", "yarabench-scan-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	src := sc.public
	what := "the built-in rules/yara files (no -public folder given)"
	if src == "" {
		src = "rules/yara"
	}
	names, _ := filepath.Glob(filepath.Join(src, "*.yar"))
	sort.Strings(names)
	if sc.public != "" && len(names) > sc.publicFiles {
		names = names[:sc.publicFiles]
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no .yar files in %s", src)
	}
	if sc.public != "" {
		what = fmt.Sprintf("the first %d .yar files (name order) of %s", len(names), sc.public)
	}
	ruleDir := filepath.Join(tmp, "rules")
	if err := os.Mkdir(ruleDir, 0o755); err != nil {
		return "", err
	}
	var ruleFiles []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return "", err
		}
		p := filepath.Join(ruleDir, filepath.Base(n))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return "", err
		}
		ruleFiles = append(ruleFiles, p)
	}
	corpus := filepath.Join(tmp, "corpus")
	total, err := makeScanCorpus(corpus, sc.files)
	if err != nil {
		return "", err
	}
	cliArgs := []string{"-r", "-p", fmt.Sprint(threads)}
	for _, x := range []string{yara.ExtFilename, yara.ExtFilepath, yara.ExtExtension, yara.ExtFiletype, yara.ExtOwner} {
		cliArgs = append(cliArgs, "-d", x+"=")
	}
	cliArgs = append(append(cliArgs, ruleFiles...), corpus)
	scanArgs := func(cache string) []string {
		return []string{"scan", "--threads", fmt.Sprint(threads), "--cache-dir", cache, "--rules", ruleDir, corpus}
	}
	type scanner struct {
		name string
		run  func(round int) (timing, []byte, error)
		ts   []timing
		set  []string
	}
	warmCache := filepath.Join(tmp, "cache-warm")
	scanners := []*scanner{
		{name: "yara CLI", run: func(int) (timing, []byte, error) { return runProcess(cli, cliArgs, nil) }},
		{name: "tillwatch scan, cold cache (compiles)", run: func(round int) (timing, []byte, error) {
			return runProcess(sc.bin, scanArgs(filepath.Join(tmp, fmt.Sprintf("cache-cold-%d", round))), nil)
		}},
		{name: "tillwatch scan, warm cache", run: func(int) (timing, []byte, error) { return runProcess(sc.bin, scanArgs(warmCache), nil) }},
	}
	if sc.baseline != "" {
		scanners = append(scanners, &scanner{name: "before: " + sc.baseline, run: func(int) (timing, []byte, error) {
			// An earlier binary may have no --cache-dir: its cache, if any,
			// goes to a folder of the benchmark's own.
			return runProcess(sc.baseline, []string{"scan", "--threads", fmt.Sprint(threads), "--rules", ruleDir, corpus}, []string{"XDG_CACHE_HOME=" + filepath.Join(tmp, "xdg")})
		}})
	}
	for i := 0; i <= runs; i++ {
		for _, s := range scanners {
			t, o, err := s.run(i)
			if err != nil {
				return "", err
			}
			if s.name == "yara CLI" {
				s.set = parseCLI(o)
			} else {
				s.set = parseScan(o)
			}
			if i > 0 {
				s.ts = append(s.ts, t)
			}
		}
	}
	identical := true
	for _, s := range scanners[1:] {
		identical = identical && strings.Join(s.set, "\n") == strings.Join(scanners[0].set, "\n")
	}
	c := medians(scanners[0].ts)
	mb := float64(total) / (1 << 20)
	section := fmt.Sprintf(`
### The scan command against the CLI

`+"`%s scan --threads %d --rules RULES CORPUS`"+` against `+"`yara -r -p %d RULES/*.yar CORPUS`"+` (with the five
externals defined empty), both as processes that read and compile the rules on every run. RULES: %s. CORPUS: %d
generated files (%.0f MiB; text, and files starting like PE and ELF executables, 1 to 32 KiB). %s is built by
`+"`make build`"+` (libyara linked statically); "cold cache" gives it a new, empty `+"`--cache-dir`"+` every run (it
compiles and writes the cache), "warm cache" one it wrote before (it loads the compiled set).

| scanner | time (median) | files/s | CPU | matches | throughput ratio | CPU ratio |
| --- | --- | --- | --- | --- | --- | --- |
`, sc.bin, threads, threads, what, sc.files, mb, sc.bin)
	for _, s := range scanners {
		t := medians(s.ts)
		section += fmt.Sprintf("| %s | %.2fs | %.0f | %.2fs | %d | **%.2fx** | %.2fx |\n", s.name, t.wall.Seconds(), float64(sc.files)/t.wall.Seconds(), t.cpu.Seconds(), len(s.set), c.wall.Seconds()/t.wall.Seconds(), c.cpu.Seconds()/t.cpu.Seconds())
	}
	section += fmt.Sprintf("\nGoal: throughput ratio >= 0.95x, compilation included. Match sets identical: **%v**.\n", identical)
	if !identical {
		return section, fmt.Errorf("scan match sets differ")
	}
	return section, nil
}

// parseScan reads `tillwatch scan` lines (path, rule, ruleset) as
// "rule path", the CLI's order.
func parseScan(o []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(o))
	for sc.Scan() {
		if f := strings.Split(sc.Text(), "\t"); len(f) == 3 {
			out = append(out, f[1]+" "+f[0])
		}
	}
	sort.Strings(out)
	return out
}

// makeScanCorpus writes n files of 1 to 32 KiB (fixed seed) in folders of
// 100: text mostly, one in ten starting like a PE executable and one in
// twenty like an ELF one, so that the pe and elf modules parse headers.
func makeScanCorpus(dir string, n int) (int64, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields("the till receipt payment card store cashier loyalty backup printer network update invoice total tax vat drawer scanner barcode price discount")
	var total int64
	for i := range n {
		size := 1<<10 + rng.IntN(31<<10)
		buf := make([]byte, 0, size+16)
		switch {
		case i%10 == 0:
			buf = append(buf, "MZ"...)
			buf = append(buf, make([]byte, 58)...)
			buf = append(buf, 0x80, 0, 0, 0) // e_lfanew
			buf = append(buf, make([]byte, 0x80-len(buf))...)
			buf = append(buf, "PE\x00\x00\x4c\x01\x03\x00"...)
		case i%20 == 1:
			buf = append(buf, "\x7fELF\x02\x01\x01\x00"...)
		}
		for len(buf) < size {
			buf = append(buf, words[rng.IntN(len(words))]...)
			buf = append(buf, ' ')
		}
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), buf[:size], 0o644); err != nil {
			return 0, err
		}
		total += int64(size)
	}
	return total, nil
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
