package rmm

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// ActionScanFound is event.action of a file the install-path scan found.
// The file-activity source emits "create", "close-write" and "rename" for
// the same dataset; detectors treat all four alike.
const ActionScanFound = "scan-found"

// Scanner defaults.
const (
	DefaultScanInterval = 60 * time.Second
	// DefaultScanMaxFiles bounds one scan: a catalog directory holding
	// thousands of files (a user's home under a broad path) must not turn
	// the scan into a disk crawl.
	DefaultScanMaxFiles = 4096
	scanMaxDepth        = 4
)

// UnitDirs are where systemd unit files of installed services live.
var UnitDirs = []string{"/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/"}

// Scanner is a pipeline.Source that looks for the catalog's products in
// their install paths: at start, then every Interval. It emits one
// tillwatch.file event per executable file found in an install path and per
// service unit of a catalogued product; the RMM detector decides what is
// unapproved and checks approved binaries against the baseline.
type Scanner struct {
	// Matcher recognises the products (the scanner's OS).
	Matcher *Matcher
	// Root is prefixed to every path scanned ("" or "/" for the real
	// system); tests point it at a temp dir holding a fake tree.
	Root     string
	Interval time.Duration
	MaxFiles int
	// OnScan, if set, is called after each scan with the number of files
	// emitted and whether the MaxFiles bound cut the scan short.
	OnScan func(found int, truncated bool)
}

// Name implements pipeline.Source.
func (s *Scanner) Name() string { return "rmm-scan" }

// Run implements pipeline.Source: it scans at once, then every Interval,
// until ctx is done.
func (s *Scanner) Run(ctx context.Context, emit func(event.Event)) error {
	iv := s.Interval
	if iv <= 0 {
		iv = DefaultScanInterval
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		n, cut := s.Scan(ctx, emit)
		if s.OnScan != nil {
			s.OnScan(n, cut)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Scan walks the install paths once and returns how many files it emitted
// and whether the bound cut it short.
func (s *Scanner) Scan(ctx context.Context, emit func(event.Event)) (int, bool) {
	max := s.MaxFiles
	if max <= 0 {
		max = DefaultScanMaxFiles
	}
	n := 0
	found := func(logical string, fi fs.FileInfo) bool {
		if n >= max || ctx.Err() != nil {
			return false
		}
		n++
		emit(fileEvent(logical, fi))
		return true
	}
	for _, p := range s.Matcher.InstallPaths() {
		real := s.real(p)
		fi, err := os.Lstat(real)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			if fi.Mode().IsRegular() && !found(strings.TrimSuffix(p, "/"), fi) {
				return n, true
			}
			continue
		}
		if !s.walk(real, p, 0, found) {
			return n, true
		}
	}
	for _, svc := range s.Matcher.Services() {
		for _, d := range UnitDirs {
			unit := d + svc + ".service"
			if fi, err := os.Lstat(s.real(unit)); err == nil && !found(unit, fi) {
				return n, true
			}
		}
	}
	return n, false
}

// walk reports executable regular files below real (logical is the path
// without Root); it returns false when the bound was hit.
func (s *Scanner) walk(real, logical string, depth int, found func(string, fs.FileInfo) bool) bool {
	if depth > scanMaxDepth {
		return true
	}
	des, err := os.ReadDir(real)
	if err != nil {
		return true
	}
	for _, de := range des {
		r, l := filepath.Join(real, de.Name()), filepath.Join(logical, de.Name())
		// Symlinks are not followed: a link out of an install path must
		// not make the scan read the rest of the disk.
		if de.Type()&fs.ModeSymlink != 0 {
			continue
		}
		if de.IsDir() {
			if !s.walk(r, l, depth+1, found) {
				return false
			}
			continue
		}
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		if !found(l, fi) {
			return false
		}
	}
	return true
}

func (s *Scanner) real(p string) string {
	if s.Root == "" || s.Root == "/" {
		return p
	}
	return filepath.Join(s.Root, p)
}

func fileEvent(p string, fi fs.FileInfo) event.Event {
	now := time.Now()
	return event.Event{
		Timestamp: now,
		ECS:       event.ECS{Version: event.ECSVersion},
		Event: event.Meta{
			Kind: event.KindEvent, ID: event.NewID(), Category: []string{"file"}, Type: []string{"info"},
			Action: ActionScanFound, Dataset: event.DatasetFile,
		},
		File: &event.File{Path: p, Name: filepath.Base(p), Directory: filepath.Dir(p), Size: fi.Size()},
	}
}
