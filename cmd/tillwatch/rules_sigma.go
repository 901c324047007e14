package main

import (
	"os"
	"path/filepath"

	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
)

// lintSigma checks a sigma/ rule folder: parse, logsource, fields, modifiers,
// condition, and that every rule has positive and negative samples.
func lintSigma(dir string) ([]string, error) {
	return sigmaStrings(dir, sigmadetect.LintDir(os.DirFS(filepath.Dir(dir)), filepath.Base(dir))), nil
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
