// Package enrich completes alerts off the hot path: the sha256 of the
// process executable and of the file involved, and the process ancestry
// (tillwatch.process.ancestry) from the process table, including ancestors
// that have already exited.
package enrich

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/filehash"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// MaxHashSize bounds what is hashed; a larger file gets no hash rather than
// stalling the alert path.
const MaxHashSize = 256 << 20

// Enricher implements pipeline.Enricher.
type Enricher struct {
	table    *proctree.Table
	procRoot string

	hashes *filehash.Cache
}

// New returns an enricher reading the process table and procRoot ("/proc").
// hashes is the sensor's digest cache (shared with YARA and the kill-switch,
// so an executable is read once); nil gives the enricher its own.
func New(table *proctree.Table, procRoot string, hashes *filehash.Cache) *Enricher {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if hashes == nil {
		hashes = filehash.New(0)
	}
	return &Enricher{table: table, procRoot: procRoot, hashes: hashes}
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
	proctree.SetLineage(a, e.table.Ancestry(int(a.Process.PID), proctree.MaxDepth))
}

// hash returns the sha256 of the regular file at path, cached per file
// version (device, inode, size, mtime, ctime): one binary run by many
// processes is hashed once, and a file changed in place is hashed again.
func (e *Enricher) hash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, _, err := e.hashes.Sum(f, MaxHashSize)
	return sum, err
}
