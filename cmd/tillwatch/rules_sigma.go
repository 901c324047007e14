package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
)

// lintSigma checks a sigma/ rule folder (nested folders included): errors
// (the rule will not load), warnings, one "skipped" line per valid rule that
// cannot run on tillwatch's events, missing samples of our own rules, and a
// summary line.
func lintSigma(dir string) ([]string, error) {
	fsys, base := os.DirFS(filepath.Dir(dir)), filepath.Base(dir)
	out := sigmaStrings(dir, sigmadetect.LintDir(fsys, base))
	rs, ps := sigmadetect.LoadDir(fsys, base)
	out = append(out, fmt.Sprintf("%s: note: %s (on %s)", dir, sigmadetect.Summarize(rs, ps, runtime.GOOS), runtime.GOOS))
	return out, nil
}

// testSigma runs every rule's samples (tests/<rule>/{positive,negative}/*.json).
func testSigma(dir string) ([]string, error) {
	return sigmaStrings(dir, sigmadetect.TestDir(os.DirFS(filepath.Dir(dir)), filepath.Base(dir))), nil
}

// sigmaStrings names each problem's file as the user gave the folder.
func sigmaStrings(dir string, ps []sigmadetect.Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		p.File = filepath.Join(filepath.Dir(dir), p.File)
		out[i] = p.String()
	}
	return out
}
