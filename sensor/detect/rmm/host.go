package rmm

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tillwatch/tillwatch/internal/filehash"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// Ancestry is the slice of the process table the detector needs: the
// ancestors of pid, nearest first, including exited ones
// (proctree.Table implements it).
type Ancestry interface {
	Ancestry(pid int, max int) []proctree.Proc
}

// Host is everything the detector reads from the OS, behind one seam: the
// rules' logic stays testable on fakes, and the reads stay few and cheap.
// The detector asks only for descendants of an RMM agent and for agents'
// binaries, and digests come from a cache per file version, so a busy host
// costs stat calls, not reads. What remains must be read while the process
// lives (where its output goes, which image it runs), so it cannot move off
// the detector's goroutine without losing what it observes.
type Host interface {
	// Stdout returns where pid's standard output points (a path, or
	// "pipe:[...]", "socket:[...]" for what is not a file).
	Stdout(pid int64) (string, error)
	// Digest returns the sha256 and size of the image pid runs, or of
	// file when pid is 0 or its image cannot be read.
	Digest(pid int64, file string) (sum string, size int64, err error)
	// Stat is os.Stat.
	Stat(path string) (fs.FileInfo, error)
}

// procHost is Host on a real /proc.
type procHost struct {
	root   string
	hashes *filehash.Cache
}

// NewProcHost returns the Host reading procRoot ("/proc") and hashing
// through hashes (the sensor's shared digest cache; nil makes one).
func NewProcHost(procRoot string, hashes *filehash.Cache) Host {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if hashes == nil {
		hashes = filehash.New(0)
	}
	return &procHost{root: procRoot, hashes: hashes}
}

func (h *procHost) pidPath(pid int64, name string) string {
	return filepath.Join(h.root, strconv.FormatInt(pid, 10), name)
}

func (h *procHost) Stdout(pid int64) (string, error) { return os.Readlink(h.pidPath(pid, "fd/1")) }

func (h *procHost) Stat(path string) (fs.FileInfo, error) { return os.Stat(path) }

func (h *procHost) Digest(pid int64, file string) (string, int64, error) {
	if pid > 0 {
		// /proc/<pid>/exe opens the image the process runs, even when the
		// path on disk was replaced since: that image is what is checked.
		if sum, size, err := h.digest(h.pidPath(pid, "exe")); err == nil || file == "" {
			return sum, size, err
		}
	}
	return h.digest(file)
}

func (h *procHost) digest(path string) (string, int64, error) { return rmmcat.HashFile(h.hashes, path) }
