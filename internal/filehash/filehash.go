// Package filehash computes SHA-256 digests of open files and remembers
// them per file version, so a binary run by a thousand processes is read
// once. The sensor hashes the executable of every new process (enrichment,
// YARA, the kill-switch's kill by digest); on a busy host that reading was
// most of its CPU and, through whole-file buffers, most of its memory.
//
// A version is the file's identity and change times as the kernel reports
// them for the open descriptor: device, inode, size, mtime and ctime (both
// in nanoseconds). ctime cannot be set from user space and moves on every
// write, chmod or rename, so a changed file never answers with an old
// digest. A file that changes while it is read is hashed but not
// remembered.
package filehash

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// ErrTooLarge: the file is larger than the limit given to Sum.
var ErrTooLarge = errors.New("file larger than the hash limit")

// Version identifies one content version of a file.
type Version struct {
	Dev, Ino               uint64
	Size, MtimeNs, CtimeNs int64
}

// Cache maps file versions to digests. Bounded: when full it starts over.
// Safe for concurrent use. The zero value is not usable; use New.
type Cache struct {
	max int
	mu  sync.Mutex
	m   map[Version]string
}

// New returns a cache of at most max versions (4096 if max <= 0).
func New(max int) *Cache {
	if max <= 0 {
		max = 4096
	}
	return &Cache{max: max, m: map[Version]string{}}
}

// Len is the number of versions remembered.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Sum returns the hex SHA-256 of the regular file f (read from its start,
// whatever its offset) and its size. limit bounds what is read: a larger
// file is ErrTooLarge. The digest is answered from the cache when this
// version of the file was hashed before.
func (c *Cache) Sum(f *os.File, limit int64) (string, int64, error) {
	v, ok, err := VersionOf(f)
	if err != nil {
		return "", 0, err
	}
	if v.Size > limit {
		return "", v.Size, fmt.Errorf("%s: %d bytes: %w (%d)", f.Name(), v.Size, ErrTooLarge, limit)
	}
	if ok {
		c.mu.Lock()
		sum, hit := c.m[v]
		c.mu.Unlock()
		if hit {
			return sum, v.Size, nil
		}
	}
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, limit+1))
	if err != nil {
		return "", n, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if n > limit {
		return "", n, fmt.Errorf("%s grew while read: %w (%d)", f.Name(), ErrTooLarge, limit)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if after, ok2, err := VersionOf(f); ok && ok2 && err == nil && after == v && n == v.Size {
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m)
		}
		c.m[v] = sum
		c.mu.Unlock()
	}
	return sum, n, nil
}

// VersionOf returns f's version. ok is false where the platform gives no
// identity (the digest is then never cached). f must be a regular file.
func VersionOf(f *os.File) (v Version, ok bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return v, false, err
	}
	if !fi.Mode().IsRegular() {
		return v, false, fmt.Errorf("%s: not a regular file", f.Name())
	}
	v, ok = version(fi)
	v.Size = fi.Size()
	return v, ok, nil
}
