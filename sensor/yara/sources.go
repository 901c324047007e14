package yara

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Source is one rule file to compile.
type Source struct {
	// Name is how problems name the file (a path an author can open).
	Name string
	// FS and Path locate the file, so includes resolve next to it.
	FS   fs.FS
	Path string
	Text []byte
	// Namespace keeps rule names of different folders apart.
	Namespace string
}

// RuleExt reports whether name is a YARA rule file.
func RuleExt(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yar" || ext == ".yara"
}

// skipDir names folders that hold samples, not rules.
func skipDir(name string) bool {
	return name == "tests" || name == "testdata" || strings.HasPrefix(name, ".")
}

// LoadFS returns every rule file under dir of fsys, recursively and sorted,
// skipping tests/ and testdata/ folders (they hold samples). display
// prefixes names in problems; ns is the namespace of every file.
func LoadFS(fsys fs.FS, dir, display, ns string) ([]Source, error) {
	var out []Source
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && skipDir(d.Name()) {
				return fs.SkipDir
			}
			return nil
		}
		if !RuleExt(p) || !d.Type().IsRegular() {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		out = append(out, Source{Name: path.Join(display, strings.TrimPrefix(p, dir+"/")), FS: fsys, Path: p, Text: b, Namespace: ns})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return roots(out), nil
}

var (
	includeRe = regexp.MustCompile(`(?m)^[ \t]*include[ \t]+"([^"\n]+)"`)
	commentRe = regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`)
	onlyRe    = regexp.MustCompile(`^(?:\s*(?:include|import)\s+"[^"\n]*")*\s*$`)
)

// mayInclude is a cheap test before the regular expressions: most rule
// files include nothing, and matching includeRe over every file of a
// public set (three times per file in roots) cost more than libyara's
// parse of it.
func mayInclude(s Source) bool {
	return bytes.Contains(s.Text, []byte("include ")) || bytes.Contains(s.Text, []byte("include\t"))
}

// includes lists the files s includes, as paths in s.FS.
func includes(s Source) []string {
	if !mayInclude(s) {
		return nil
	}
	var out []string
	for _, m := range includeRe.FindAllSubmatch(s.Text, -1) {
		name := string(m[1])
		if path.IsAbs(name) {
			continue
		}
		out = append(out, path.Join(path.Dir(s.Path), name))
	}
	return out
}

// isIndex reports whether s only includes other files (an index file,
// as Yara-Rules' index.yar and malware_index.yar are).
func isIndex(s Source) bool {
	return mayInclude(s) && includeRe.Match(s.Text) && onlyRe.Match(commentRe.ReplaceAll(s.Text, nil))
}

// roots picks the files of a folder to compile so that each file is
// compiled once: a file another file includes is compiled through that
// file. Index files (files that only include others, as Yara-Rules'
// index.yar and malware_index.yar) say what the set of their folder is:
// index.yar (or index.yara) when the folder has one, else each of its
// index files; the files they list, directly or through other index files,
// are compiled, each once, and the index files themselves are not (two
// index files listing the same file made it a duplicate). Files below an
// index's folder that no index lists are not loaded, as with the yara CLI
// given the index; folders without an index load every file.
func roots(srcs []Source) []Source {
	byPath := map[string]int{}
	byDir := map[string][]int{}
	for i, s := range srcs {
		byPath[s.Path] = i
		if isIndex(s) {
			d := path.Dir(s.Path)
			byDir[d] = append(byDir[d], i)
		}
	}
	included := map[string]bool{}
	for _, s := range srcs {
		if !isIndex(s) {
			for _, inc := range includes(s) {
				included[inc] = true
			}
		}
	}
	var idx []int
	var dirs []string
	for d, is := range byDir {
		dirs = append(dirs, d)
		chosen := is
		for _, i := range is {
			if b := path.Base(srcs[i].Path); b == "index.yar" || b == "index.yara" {
				chosen = []int{i}
				break
			}
		}
		idx = append(idx, chosen...)
	}
	sort.Ints(idx)
	governed := func(p string) bool {
		for _, d := range dirs {
			if d == "." || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	var out []Source
	seen := map[string]bool{}
	var walk func(s Source, depth int)
	walk = func(s Source, depth int) {
		if depth > 16 {
			return
		}
		for _, inc := range includes(s) {
			if seen[inc] || included[inc] {
				continue
			}
			seen[inc] = true
			j, ok := byPath[inc]
			if !ok {
				continue // outside the tree or not a .yar: libyara resolves it, or says why
			}
			if isIndex(srcs[j]) {
				walk(srcs[j], depth+1)
				continue
			}
			out = append(out, srcs[j])
		}
	}
	for _, i := range idx {
		walk(srcs[i], 0)
	}
	for _, s := range srcs {
		if !isIndex(s) && !included[s.Path] && !governed(s.Path) {
			out = append(out, s)
		}
	}
	return out
}

// RuleDir is where the YARA rules of a rule folder given with --rules are:
// its yara/ subfolder when there is one (a tillwatch rule tree), else the
// folder itself (a public rule set).
func RuleDir(dir string) string {
	if fi, err := os.Stat(filepath.Join(dir, "yara")); err == nil && fi.IsDir() {
		return filepath.Join(dir, "yara")
	}
	return dir
}

// LoadPath loads the rule files of a --rules argument: a folder (see
// RuleDir) or one rule file. Each folder is its own namespace.
func LoadPath(p string) ([]Source, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", p, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return []Source{{Name: p, FS: os.DirFS(filepath.Dir(p)), Path: filepath.Base(p), Text: b, Namespace: p}}, nil
	}
	dir := RuleDir(p)
	srcs, err := LoadFS(os.DirFS(dir), ".", dir, dir)
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", p, err)
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("rules %s: no .yar or .yara files", p)
	}
	return srcs, nil
}

// FileExternals are the externals of the file at p with its first bytes
// head (HeadSize of them, or all of a shorter file) and owner name.
func FileExternals(p string, head []byte, owner string) Externals {
	return Externals{
		Filename:  filepath.Base(p),
		Filepath:  filepath.Dir(p),
		Extension: strings.ToLower(filepath.Ext(p)),
		Filetype:  Filetype(head, p),
		Owner:     owner,
	}
}

// TreeDirs are those of the sensor's --rules folders that hold YARA rules
// (a yara/ subfolder); the others carry only other kinds of rules.
func TreeDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, "yara")); err == nil && fi.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// SelfSHA256 lists the digests of the running binary and of the tillwatch
// binaries beside it (nil if unreadable): they embed the rule text.
func SelfSHA256() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	var out []string
	// The sensor and its sibling binaries (same folder, fixed names) all
	// embed the built-in rules' text, so every string rule would match
	// them; running `tillwatch alerts` must not be an encryptor alert.
	seen := map[string]bool{}
	for _, p := range []string{exe, filepath.Join(filepath.Dir(exe), "tillwatch"),
		filepath.Join(filepath.Dir(exe), "tillwatch-sensor"), filepath.Join(filepath.Dir(exe), "tillwatch-collector")} {
		if sum, err := fileSHA256(p); err == nil && !seen[sum] {
			seen[sum] = true
			out = append(out, sum)
		}
	}
	return out
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
