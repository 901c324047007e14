package rmm

import (
	"path/filepath"

	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// sysIndex recognises copies of system binaries by content: the sha256 of
// each named system binary found in the system dirs, computed once at start.
// Content, not name, is what survives a rename (Kaseya: certutil.exe copied
// to cert.exe).
type sysIndex struct {
	bySum map[string]string // sha256 -> system path
}

func newSysIndex(dirs, names []string) *sysIndex {
	ix := &sysIndex{bySum: map[string]string{}}
	for _, dir := range dirs {
		for _, n := range names {
			p := filepath.Join(dir, n)
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue
			}
			sum, _, err := rmmcat.HashFile(nil, real)
			if err != nil {
				continue
			}
			if _, ok := ix.bySum[sum]; !ok {
				ix.bySum[sum] = p
			}
		}
	}
	return ix
}

// lookup returns the system binary the image pid runs (else the file at
// path) is a copy of, or "". Called only for descendants of an RMM agent
// that run something outside the system dirs; digests come from host's
// cache, so a program run often is read once.
func (ix *sysIndex) lookup(host Host, pid int64, path string) string {
	sum, _, err := host.Digest(pid, path)
	if err != nil {
		return ""
	}
	return ix.bySum[sum]
}
