//go:build cgo

package yara

// The version macros come from the headers libyara was built with; in the
// static build that is the library inside the binary.

// #include <yara/libyara.h>
// #include <yara/error.h>
import "C"

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"
	"time"

	goyara "github.com/hillu/go-yara/v4"
)

// Enabled reports whether this build has YARA.
const Enabled = true

// Version is the libyara version compiled in, e.g. "4.2.3".
func Version() string {
	return fmt.Sprintf("%d.%d.%d", C.YR_MAJOR_VERSION, C.YR_MINOR_VERSION, C.YR_MICRO_VERSION)
}

// Rules is a compiled rule set. It is immutable and safe for concurrent
// scans; each scan uses its own libyara scanner.
type Rules struct {
	r        *goyara.Rules
	n        int
	warnings []Problem
	// scanners are reused across scans, as the yara CLI keeps one per
	// thread: creating and destroying one per file was a fixed cost on
	// every file of a sweep. A scanner dropped by the pool is destroyed by
	// go-yara's finalizer.
	scanners sync.Pool
}

// Len is the number of rules.
func (r *Rules) Len() int { return r.n }

// Warnings are libyara's compile warnings (slow strings and the like).
func (r *Rules) Warnings() []Problem { return r.warnings }

// Compile compiles srcs into one rule set. A failure is a ProblemsError
// naming file:line and libyara's reason for every error of the first
// failing file (libyara cannot continue after an error).
func Compile(srcs []Source) (*Rules, error) {
	r, _, _, err := compile(srcs)
	return r, err
}

// compile is Compile, also returning the set's serialisation (nil if the
// round trip failed) and the files read through includes.
func compile(srcs []Source) (*Rules, []byte, []includeRead, error) {
	c, err := goyara.NewCompiler()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("yara compiler: %w", err)
	}
	defer c.Destroy()
	for _, name := range []string{ExtFilename, ExtFilepath, ExtExtension, ExtFiletype, ExtOwner} {
		if err := c.DefineVariable(name, ""); err != nil {
			return nil, nil, nil, fmt.Errorf("define external %s: %w", name, err)
		}
	}
	var cur *Source
	var reads []includeRead
	c.SetIncludeCallback(func(name, _, _ string) []byte {
		// Includes resolve inside the including file's own tree only:
		// never an absolute path or "..", so a rule file cannot read
		// arbitrary files of the (root) sensor.
		if cur == nil || cur.FS == nil {
			return nil
		}
		p := path.Join(path.Dir(cur.Path), name)
		if !fs.ValidPath(p) || path.IsAbs(name) {
			return nil
		}
		b, err := fs.ReadFile(cur.FS, p)
		if err != nil {
			return nil
		}
		reads = append(reads, includeRead{Source: cur.Name, Path: p, SHA256: sha256.Sum256(b)})
		return b
	})
	var warnings []Problem
	seenWarn := 0
	for i := range srcs {
		cur = &srcs[i]
		ns := cur.Namespace
		if ns == "" {
			ns = "default"
		}
		if err := c.AddString(string(cur.Text), ns); err != nil {
			var ps ProblemsError
			for _, m := range c.Errors {
				p := Problem{File: cur.Name, Line: m.Line, Reason: m.Text}
				if len(ps) == 0 || ps[len(ps)-1] != p { // libyara repeats some errors
					ps = append(ps, p)
				}
			}
			if len(ps) == 0 {
				ps = append(ps, Problem{File: cur.Name, Reason: err.Error()})
			}
			return nil, nil, nil, ps
		}
		for _, m := range c.Warnings[seenWarn:] {
			warnings = append(warnings, Problem{File: cur.Name, Line: m.Line, Reason: "warning: " + m.Text})
		}
		seenWarn = len(c.Warnings)
	}
	r, err := c.GetRules()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("yara: %w", err)
	}
	r, ser := compactRules(r)
	return &Rules{r: r, n: len(r.GetRules()), warnings: warnings}, ser, reads, nil
}

// compactRules returns r saved and loaded again. Rules straight from the
// compiler keep the compiler's arena, about 9 MB of touched memory for any
// rule set, five rules or five hundred: a quarter of an idle sensor's
// resident memory. Loaded from their own serialisation they take what
// they need. If the round trip fails, r is kept as it is.
func compactRules(r *goyara.Rules) (*goyara.Rules, []byte) {
	var buf bytes.Buffer
	if err := r.Write(&buf); err != nil {
		return r, nil
	}
	loaded, err := goyara.ReadRules(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return r, nil
	}
	r.Destroy()
	releaseCHeap()
	return loaded, buf.Bytes()
}

// loadRules loads a set from its serialisation (a cache entry).
func loadRules(ser []byte, warnings []Problem) (*Rules, error) {
	r, err := goyara.ReadRules(bytes.NewReader(ser))
	if err != nil {
		return nil, fmt.Errorf("yara: load compiled rules: %w", err)
	}
	return &Rules{r: r, n: len(r.GetRules()), warnings: warnings}, nil
}

// collector gathers matches in the scan callback.
type collector struct{ out []Match }

func (c *collector) RuleMatching(_ *goyara.ScanContext, r *goyara.Rule) (bool, error) {
	var raw []rawMeta
	for _, m := range r.Metas() {
		raw = append(raw, rawMeta{m.Identifier, m.Value})
	}
	c.out = append(c.out, Match{Rule: r.Identifier(), Namespace: r.Namespace(), Tags: r.Tags(), Meta: metaFrom(raw)})
	return false, nil
}

func (r *Rules) scan(x Externals, timeout time.Duration, run func(s *goyara.Scanner) error) ([]Match, error) {
	s, _ := r.scanners.Get().(*goyara.Scanner)
	if s == nil {
		var err error
		if s, err = goyara.NewScanner(r.r); err != nil {
			return nil, fmt.Errorf("yara scanner: %w", err)
		}
	}
	// Every external is defined again below and the callback replaced:
	// nothing of the previous scan carries over.
	defer r.scanners.Put(s)
	for k, v := range x.vars() {
		if err := s.DefineVariable(k, v); err != nil {
			return nil, fmt.Errorf("set external %s: %w", k, err)
		}
	}
	var c collector
	s.SetCallback(&c).SetTimeout(timeout)
	if err := run(s); err != nil {
		return c.out, classify(err)
	}
	return c.out, nil
}

// classify turns libyara's codes callers branch on into sentinels.
func classify(err error) error {
	var ye goyara.Error
	if errors.As(err, &ye) {
		switch ye {
		case goyara.Error(C.ERROR_SCAN_TIMEOUT):
			return fmt.Errorf("%w (%v)", ErrTimeout, err)
		case goyara.Error(C.ERROR_TOO_MANY_MATCHES):
			return fmt.Errorf("%w (%v)", ErrTooManyMatches, err)
		}
	}
	return err
}

// ScanMem scans buf. A zero timeout means none.
func (r *Rules) ScanMem(buf []byte, x Externals, timeout time.Duration) ([]Match, error) {
	return r.scan(x, timeout, func(s *goyara.Scanner) error { return s.ScanMem(buf) })
}

// ScanFile scans the file at p (libyara maps it).
func (r *Rules) ScanFile(p string, x Externals, timeout time.Duration) ([]Match, error) {
	return r.scan(x, timeout, func(s *goyara.Scanner) error { return s.ScanFile(p) })
}

// ScanFD scans the open file fd (libyara maps it: no copy in Go memory).
func (r *Rules) ScanFD(fd uintptr, x Externals, timeout time.Duration) ([]Match, error) {
	return r.scan(x, timeout, func(s *goyara.Scanner) error { return s.ScanFileDescriptor(fd) })
}

// ScanProc scans the memory of process pid (libyara attaches with ptrace
// and reads /proc/pid/mem; needs CAP_SYS_PTRACE).
func (r *Rules) ScanProc(pid int, timeout time.Duration) ([]Match, error) {
	return r.scan(Externals{}, timeout, func(s *goyara.Scanner) error { return s.ScanProc(pid) })
}

// Infos lists every rule of the set with its metadata (no scan).
func (r *Rules) Infos() []Match {
	var out []Match
	for _, rule := range r.r.GetRules() {
		var raw []rawMeta
		for _, m := range rule.Metas() {
			raw = append(raw, rawMeta{m.Identifier, m.Value})
		}
		out = append(out, Match{Rule: rule.Identifier(), Namespace: rule.Namespace(), Tags: rule.Tags(), Meta: metaFrom(raw)})
	}
	return out
}
