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
	skipped       string // why the workload did not run ("" = it ran)
}

// missingTools names the first program of needs not on PATH ("" = none).
func missingTools(needs []string) string {
	for _, n := range needs {
		if _, err := exec.LookPath(n); err != nil {
			return n
		}
	}
	return ""
}

// workload is a shell command run in a watched folder holding a copy of
// the corpus under data/; prepare (optional) sets up more files first.
type workload struct {
	name, script string
	prepare      func(dir string) error
	// needs lists the programs the workload runs; one absent skips it
	// (said in the table).
	needs []string
	// command is what the table shows ("" = the script's first line).
	command string
}

// gitEnv pins git's identity and keeps the user's configuration out.
const gitEnv = `export GIT_CONFIG_NOSYSTEM=1 HOME="$PWD" GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
`

// atomicSave re-saves every DOCX under data/ as office suites do: a new
// zip written to a temporary beside it, renamed over the original.
const atomicSave = `
import os, sys, zipfile
for root, _, names in os.walk("data"):
    for n in names:
        if not n.endswith(".docx"):
            continue
        p = os.path.join(root, n)
        tmp = os.path.join(root, ".~lock." + n + ".tmp")
        with zipfile.ZipFile(p) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for item in zin.infolist():
                b = zin.read(item.filename)
                if item.filename == "word/document.xml":
                    b = b.replace(b"</w:body>", b"<w:p><w:r><w:t>saved</w:t></w:r></w:p></w:body>")
                zout.writestr(item, b)
        os.replace(tmp, p)
`

// minify rewrites sources in place through a temporary and a rename, as
// minifiers and formatters do: comments and indentation dropped.
const minify = `
import os, re
for root, _, names in os.walk("data/Source"):
    for n in names:
        p = os.path.join(root, n)
        src = open(p, encoding="utf-8", errors="replace").read()
        out = chr(10).join(l.strip() for l in src.splitlines() if l.strip() and not l.strip().startswith(("//", "#")))
        open(p + ".min-tmp", "w").write(out + chr(10))
        os.replace(p + ".min-tmp", p)
`

// makeDeb stages a package of the corpus's sources and a few binary blobs
// and builds it with dpkg-deb, outside the watched folder's data.
const makeDeb = `mkdir -p pkg/DEBIAN pkg/opt/till/bin pkg/opt/till/share
printf 'Package: till-app
Version: 1.0
Architecture: all
Maintainer: bench <bench@example.invalid>
Description: till
' > pkg/DEBIAN/control
cp -r data/Source pkg/opt/till/share/
for i in 1 2 3 4 5 6; do head -c 65536 /dev/urandom > pkg/opt/till/bin/blob$i.dat; done
cp /bin/true pkg/opt/till/bin/till
dpkg-deb --build -Zxz pkg till-app.deb >/dev/null
rm -rf pkg
`

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
		{name: "git init, add, commit, checkout", needs: []string{"git"},
			command: "git init; git add -A; git commit; git checkout -b other; change every text file; git commit -a; git checkout main",
			script: gitEnv + `git init -q -b main && git add -A && git commit -q -m one
git checkout -q -b other
find data -type f \( -name '*.csv' -o -name '*.txt' -o -name '*.go' -o -name '*.c' -o -name '*.py' \) -exec sh -c 'echo "# changed" >> "$1"' sh {} \;
git commit -q -a -m two && git checkout -q main && git gc -q`},
		{name: "encrypted backup (openssl)", needs: []string{"openssl"}, script: "tar cf - data | gzip | openssl enc -aes-256-cbc -pbkdf2 -pass pass:bench -out backup.tar.gz.enc"},
		{name: "encrypted backup (gpg -c)", needs: []string{"gpg"},
			script: "mkdir -m 700 gnupg && tar czf backup.tgz data && gpg --batch --yes --quiet --homedir gnupg --pinentry-mode loopback --passphrase bench -c -o backup.tgz.gpg backup.tgz"},
		{name: "rsync mirror", needs: []string{"rsync"}, command: "rsync -a data/ mirror/; touch data/*/*.csv; rsync -a --delete data/ mirror/",
			script: "rsync -a data/ mirror/ && touch data/*/*.csv && rsync -a --checksum --delete data/ mirror/ && rsync -a -I data/ mirror/"},
		{name: "in-place minifier", needs: []string{"python3"}, command: "python3: every source rewritten without comments, temp + rename", script: "python3 -c '" + minify + "'"},
		{name: "office atomic saves", needs: []string{"python3"}, command: "python3 zipfile: every DOCX re-saved to a temp zip renamed over it", script: "python3 -c '" + atomicSave + "'"},
		{name: "rename a folder", script: "mv data/Accounts data/Accounts-old && mv data/Accounts-old data/Accounts && mv data data-moved && mv data-moved data"},
		{name: "shred of one file", needs: []string{"shred"}, command: "shred -u data/Accounts/<first file>", script: `f=$(ls data/Accounts/*.* | head -1); shred -u "$f"`},
		{name: "package install (dpkg-deb -x)", needs: []string{"dpkg-deb"}, command: "dpkg-deb -x till-app.deb root/ (twice: the second overwrites)",
			script: makeDeb + "dpkg-deb -x till-app.deb root && dpkg-deb -x till-app.deb root"},
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
		if b.onlyWorkloads != nil && !slices.Contains(b.onlyWorkloads, w.name) {
			continue
		}
		r := benignResult{name: w.name, command: strings.Split(w.script, "\n")[0]}
		if strings.HasPrefix(w.script, b.helper) {
			r.command = "ransombench -helper sqlite (modernc.org/sqlite, 2000 autocommit INSERTs)"
		}
		if strings.Contains(w.script, "\n") {
			r.command = "bash loop: write app.log, rotate .N.gz, mv app.log app.log.1, gzip app.log.1 (x40)"
		}
		if w.command != "" {
			r.command = w.command
		}
		if missing := missingTools(w.needs); missing != "" {
			r.skipped = missing + " not installed"
			fmt.Printf("benign %-22s skipped: %s\n", w.name, r.skipped)
			out = append(out, r)
			continue
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
	held := newHoldWatch(cmd.Process.Pid, b.placement == placementHost)
	hung := time.After(5 * time.Minute)
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-hung:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			werr = fmt.Errorf("hung (stopped?) after 5m: %w", <-done)
			break wait
		case <-time.After(250 * time.Millisecond):
			if _, long := held.check(); long {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				werr = fmt.Errorf("left stopped for %s (a kernel stop neither resumed nor killed): %w", stoppedTimeout, <-done)
				break wait
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	s.stop()
	if err := s.removeDecoys(); err != nil {
		return false, nil, err
	}
	var alerts []string
	fp := false
	if n := strings.Count(s.logText(), logJudgedHonest); n > 0 {
		// Not a false positive: paused in the kernel, judged, resumed.
		alerts = append(alerts, fmt.Sprintf("%d kernel stops judged honest", n))
	}
	for _, a := range s.readAlerts() {
		if b.placement == placementHost && a.ruleset != "ransomware" && !strings.HasPrefix(a.exe, dir) && !strings.Contains(a.exe, b.tmp) {
			continue // another process of the machine (host placement), not acted on
		}
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
