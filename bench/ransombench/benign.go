//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// benignResult is one benign workload over its runs.
type benignResult struct {
	name, command string
	runs, fps     int
	alerts        []string
}

// workload is a shell command run in a watched folder holding a copy of
// the corpus under data/; prepare (optional) sets up more files first.
type workload struct {
	name, script string
	prepare      func(dir string) error
}

func (b *bench) workloads() []workload {
	return []workload{
		{name: "tar czf", script: "tar czf backup.tar.gz data"},
		{name: "gzip -k over a tree", script: "gzip -k -r data"},
		{name: "cp -r", script: "cp -r data data-copy"},
		{name: "SQLite inserts", script: b.helper + " -helper sqlite -db data/Stock/till-live.db -n 2000"},
		{name: "log rotation", script: `mkdir -p logs
for i in $(seq 40); do
  for j in $(seq 400); do printf '%s till %d line %d payment ok card ****1234 total 12.50\n' "$EPOCHREALTIME" $i $j; done > logs/app.log
  for k in 4 3 2 1; do if [ -f logs/app.log.$k.gz ]; then mv -f logs/app.log.$k.gz logs/app.log.$((k+1)).gz; fi; done
  mv logs/app.log logs/app.log.1
  gzip -f logs/app.log.1
done`},
		{name: "sed -i over sources", script: "sed -i 's/total/sum/g; s/the /a /' data/Source/till-app/*.* data/Source/till-app/x/*"},
		{name: "compiler build (gcc)", script: "cd build && for f in *.c; do gcc -O1 -c \"$f\"; done && gcc -o till *.o", prepare: genCBuild},
	}
}

// genCBuild writes a small C program of several files under dir/build.
func genCBuild(dir string) error {
	d := filepath.Join(dir, "build")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	var main bytes.Buffer
	main.WriteString("#include <stdio.h>\n")
	const files = 12
	for k := range files {
		var b bytes.Buffer
		for i := range 40 {
			fmt.Fprintf(&b, "int f_%d_%d(int x) { int t = 0; for (int i = 0; i < x; i++) t += i * %d %% 7; return t; }\n", k, i, i+k)
		}
		fmt.Fprintf(&b, "int part_%d(int x) { return f_%d_0(x) + f_%d_39(x); }\n", k, k, k)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("part%02d.c", k)), b.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&main, "int part_%d(int);\n", k)
	}
	main.WriteString("int main(void) { int t = 0;\n")
	for k := range files {
		fmt.Fprintf(&main, "t += part_%d(10);\n", k)
	}
	main.WriteString("printf(\"%d\\n\", t); return 0; }\n")
	return os.WriteFile(filepath.Join(d, "main.c"), main.Bytes(), 0o644)
}

func (b *bench) benignAll() ([]benignResult, error) {
	var out []benignResult
	for _, w := range b.workloads() {
		r := benignResult{name: w.name, command: strings.Split(w.script, "\n")[0]}
		if strings.HasPrefix(w.script, b.helper) {
			r.command = "ransombench -helper sqlite (modernc.org/sqlite, 2000 autocommit INSERTs)"
		}
		if strings.Contains(w.script, "\n") {
			r.command = "bash loop: write app.log, rotate .N.gz, mv app.log app.log.1, gzip app.log.1 (x40)"
		}
		for i := range b.runs {
			fp, alerts, err := b.benign(w)
			if err != nil {
				return nil, fmt.Errorf("benign %s run %d: %w", w.name, i+1, err)
			}
			fmt.Printf("benign %-22s run %d: false positive %v %s\n", w.name, i+1, fp, strings.Join(alerts, "; "))
			r.runs++
			if fp {
				r.fps++
			}
			for _, a := range alerts {
				if !slices.Contains(r.alerts, a) {
					r.alerts = append(r.alerts, a)
				}
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// benign runs one workload once under a fresh sensor.
func (b *bench) benign(w workload) (bool, []string, error) {
	dir, err := os.MkdirTemp(b.tmp, "benign-")
	if err != nil {
		return false, nil, err
	}
	defer os.RemoveAll(dir)
	if err := copyTree(b.corpus, filepath.Join(dir, "data")); err != nil {
		return false, nil, err
	}
	if w.prepare != nil {
		if err := w.prepare(dir); err != nil {
			return false, nil, err
		}
	}
	s, err := b.startSensor(dir, true)
	if err != nil {
		return false, nil, err
	}
	cmd := exec.Command("bash", "-e", "-c", w.script)
	cmd.Dir = dir
	var o bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &o
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.stop()
		return false, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(5 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		werr = fmt.Errorf("hung (stopped?) after 5m: %w", <-done)
	}
	time.Sleep(300 * time.Millisecond)
	s.stop()
	if err := s.removeDecoys(); err != nil {
		return false, nil, err
	}
	var alerts []string
	fp := false
	for _, a := range s.readAlerts() {
		alerts = append(alerts, fmt.Sprintf("%s on %s", a.rule, filepath.Base(a.exe)))
		fp = fp || a.ruleset == "ransomware"
	}
	if werr != nil {
		fp = true
		alerts = append(alerts, fmt.Sprintf("exit: %v: %s", werr, strings.TrimSpace(lastLine(o.String()))))
	}
	return fp, alerts, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		t := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(t, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(t, data, 0o644)
	})
}
