// Package enrich completes alerts off the hot path: the sha256 of the
// process executable and of the file involved, and the process ancestry
// (tillwatch.process.ancestry) from the process table, including ancestors
// that have already exited.
package enrich

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// MaxHashSize bounds what is hashed; a larger file gets no hash rather than
// stalling the alert path.
const MaxHashSize = 256 << 20

// MaxAncestry bounds the chain copied into an alert.
const MaxAncestry = 32

// Enricher implements pipeline.Enricher.
type Enricher struct {
	table    *proctree.Table
	procRoot string

	mu     sync.Mutex
	hashes map[fileKey]string // executables are hashed once per content version
}

type fileKey struct {
	path  string
	size  int64
	mtime time.Time
}

// New returns an enricher reading the process table and procRoot ("/proc").
func New(table *proctree.Table, procRoot string) *Enricher {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Enricher{table: table, procRoot: procRoot, hashes: map[fileKey]string{}}
}

// Enrich implements pipeline.Enricher.
func (e *Enricher) Enrich(a *event.Event) {
	if p := a.Process; p != nil {
		if p.Hash == nil || p.Hash.SHA256 == "" {
			// /proc/<pid>/exe reads the very image that runs, even when the
			// file on disk was deleted or replaced after exec.
			if h, err := e.hash(filepath.Join(e.procRoot, strconv.FormatInt(p.PID, 10), "exe")); err == nil {
				p.Hash = &event.Hash{SHA256: h}
			} else if p.Executable != "" {
				if h, err := e.hash(p.Executable); err == nil {
					p.Hash = &event.Hash{SHA256: h}
				}
			}
		}
		e.ancestry(a)
	}
	if f := a.File; f != nil && (f.Hash == nil || f.Hash.SHA256 == "") {
		if h, err := e.hash(f.Path); err == nil {
			f.Hash = &event.Hash{SHA256: h}
		}
	}
}

func (e *Enricher) ancestry(a *event.Event) {
	if e.table == nil {
		return
	}
	chain := e.table.Ancestry(int(a.Process.PID), MaxAncestry)
	if len(chain) == 0 {
		return
	}
	anc := make([]event.Ancestor, 0, len(chain))
	for _, p := range chain {
		x := event.Ancestor{PID: int64(p.PID), Name: p.Name, Executable: p.Executable, CommandLine: p.CommandLine, Exited: p.Exited}
		if !p.Start.IsZero() {
			st := p.Start
			x.Start = &st
		}
		anc = append(anc, x)
	}
	if a.Tillwatch == nil {
		a.Tillwatch = &event.Tillwatch{}
	}
	if a.Tillwatch.Process == nil {
		a.Tillwatch.Process = &event.ProcessContext{}
	}
	a.Tillwatch.Process.Ancestry = anc
	if a.Process.Parent == nil || a.Process.Parent.Name == "" {
		p := chain[0]
		pp := &event.ParentProcess{PID: int64(p.PID), Name: p.Name, Executable: p.Executable, CommandLine: p.CommandLine, Args: p.Args}
		if !p.Start.IsZero() {
			st := p.Start
			pp.Start = &st
		}
		a.Process.Parent = pp
	}
}

// hash returns the sha256 of the regular file at path, cached by path, size
// and modification time.
func (e *Enricher) hash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > MaxHashSize {
		return "", fmt.Errorf("%s: %d bytes, over the %d hash limit", path, fi.Size(), MaxHashSize)
	}
	// /proc/<pid>/exe is keyed by what it points to so one binary run by
	// many processes is hashed once.
	key := fileKey{path: path, size: fi.Size(), mtime: fi.ModTime()}
	if target, err := os.Readlink(path); err == nil {
		key.path = target
	}
	e.mu.Lock()
	h, ok := e.hashes[key]
	e.mu.Unlock()
	if ok {
		return h, nil
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, io.LimitReader(f, MaxHashSize)); err != nil {
		return "", err
	}
	h = hex.EncodeToString(sum.Sum(nil))
	e.mu.Lock()
	if len(e.hashes) > 4096 {
		clear(e.hashes)
	}
	e.hashes[key] = h
	e.mu.Unlock()
	return h, nil
}
