package yara

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/logkey"
)

// A rule cache keeps compiled rule sets in a folder, each under the hash
// of its sources, so that a later compile of the same sources loads the
// set instead (`tillwatch scan` compiles public rule sets of hundreds of
// files on every run). An entry is only loaded when it is a regular file
// owned by this user, writable by no one else, in a folder of the same
// kind, and its content matches the hash in its header: libyara trusts a
// compiled set completely. Anything else is compiled again and rewritten,
// with one log line.

// includeRead is a file a source included while compiling: an entry is
// stale when one of them changed.
type includeRead struct {
	Source string   `json:"source"`
	Path   string   `json:"path"`
	SHA256 [32]byte `json:"sha256"`
}

// cacheHeader precedes the serialised rules in an entry.
type cacheHeader struct {
	Key      string        `json:"key"`
	Payload  string        `json:"payload_sha256"`
	Includes []includeRead `json:"includes,omitempty"`
	Warnings []Problem     `json:"warnings,omitempty"`
}

const (
	cacheMagic   = "TWYRC1\n"
	cacheKeep    = 16        // entries kept in the folder, newest used first
	cacheMaxSize = 512 << 20 // bigger entries are not read
)

// DefaultCacheDir is where `tillwatch scan` keeps compiled sets: the
// user's cache folder (XDG_CACHE_HOME or ~/.cache on Linux).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "tillwatch", "yara"), nil
}

// CompileCached is Compile with the compiled set kept in dir. A usable
// entry for the same sources is loaded instead of compiling; a damaged or
// unsafe one is reported to log and replaced. A cache that cannot be used
// at all (dir not ours, not writable) only costs the compile.
func CompileCached(srcs []Source, dir string, log *slog.Logger) (*Rules, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := cacheKey(srcs)
	entry := filepath.Join(dir, "yara-"+key+".rules")
	if err := safeCacheDir(dir); err != nil {
		log.Warn("yara rule cache not used; compiling", "dir", dir, logkey.Error, err)
		return Compile(srcs)
	}
	r, err := readCacheEntry(entry, key, srcs)
	switch {
	case err == nil:
		now := time.Now()
		_ = os.Chtimes(entry, now, now) // most recently used: kept longest
		return r, nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		log.Warn("yara rule cache entry unusable; compiling again", "file", entry, logkey.Error, err)
	}
	r, ser, reads, err := compile(srcs)
	if err != nil || ser == nil {
		return r, err
	}
	if err := writeCacheEntry(dir, entry, cacheHeader{Key: key, Includes: reads, Warnings: r.Warnings()}, ser); err != nil {
		log.Warn("yara rule cache not written", "dir", dir, logkey.Error, err)
	}
	return r, nil
}

// cacheKey hashes everything a compiled set depends on: the format, the
// libyara version, the externals and every source's name, namespace and
// text (included files are checked when an entry is read).
func cacheKey(srcs []Source) string {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(cacheMagic))
	field([]byte(Version()))
	for _, x := range []string{ExtFilename, ExtFilepath, ExtExtension, ExtFiletype, ExtOwner} {
		field([]byte(x))
	}
	for _, s := range srcs {
		field([]byte(s.Name))
		field([]byte(s.Namespace))
		field(s.Text)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// safeCacheDir creates dir (0700) and checks that it is a folder owned by
// this user that no one else may write to.
func safeCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	return ownedPrivate(fi)
}

// ownedPrivate fails unless fi belongs to this user and no one else may
// write to it.
func ownedPrivate(fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others (mode %v)", fi.Name(), fi.Mode().Perm())
	}
	if uid, ok := fileUID(fi); ok && int(uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this user", fi.Name(), uid)
	}
	return nil
}

func readCacheEntry(entry, key string, srcs []Source) (*Rules, error) {
	f, err := os.Open(entry)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if lfi, err := os.Lstat(entry); err != nil || !lfi.Mode().IsRegular() || !os.SameFile(fi, lfi) {
		return nil, errors.New("not a regular file")
	}
	if err := ownedPrivate(fi); err != nil {
		return nil, err
	}
	if fi.Size() > cacheMaxSize {
		return nil, fmt.Errorf("%d bytes: larger than any compiled set should be", fi.Size())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	hdr, payload, err := parseCacheEntry(b)
	if err != nil {
		return nil, err
	}
	if hdr.Key != key {
		return nil, errors.New("entry is for other sources")
	}
	if sum := sha256.Sum256(payload); hex.EncodeToString(sum[:]) != hdr.Payload {
		return nil, errors.New("content does not match its hash (damaged)")
	}
	byName := map[string]*Source{}
	for i := range srcs {
		byName[srcs[i].Name] = &srcs[i]
	}
	for _, inc := range hdr.Includes {
		s := byName[inc.Source]
		if s == nil || s.FS == nil {
			return nil, fmt.Errorf("included file %s: its source %s is gone", inc.Path, inc.Source)
		}
		b, err := fs.ReadFile(s.FS, inc.Path)
		if err != nil || sha256.Sum256(b) != inc.SHA256 {
			return nil, fmt.Errorf("included file %s changed", inc.Path)
		}
	}
	return loadRules(payload, hdr.Warnings)
}

// parseCacheEntry splits an entry: magic, header length (4 bytes, little
// endian), header JSON, serialised rules.
func parseCacheEntry(b []byte) (cacheHeader, []byte, error) {
	var hdr cacheHeader
	if !bytes.HasPrefix(b, []byte(cacheMagic)) || len(b) < len(cacheMagic)+4 {
		return hdr, nil, errors.New("not a tillwatch rule cache entry")
	}
	b = b[len(cacheMagic):]
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return hdr, nil, errors.New("truncated header")
	}
	if err := json.Unmarshal(b[:n], &hdr); err != nil {
		return hdr, nil, fmt.Errorf("header: %w", err)
	}
	return hdr, b[n:], nil
}

// writeCacheEntry writes the entry under a temporary name and renames it
// into place (readers see the old entry or the whole new one), then
// removes the least recently used entries beyond cacheKeep.
func writeCacheEntry(dir, entry string, hdr cacheHeader, ser []byte) error {
	sum := sha256.Sum256(ser)
	hdr.Payload = hex.EncodeToString(sum[:])
	hj, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".yara-*.tmp") // mode 0600
	if err != nil {
		return err
	}
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(hj)))
	_, err = f.Write(append(append(append([]byte(cacheMagic), n[:]...), hj...), ser...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), entry)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	pruneCache(dir)
	return nil
}

func pruneCache(dir string) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type ent struct {
		name string
		mod  time.Time
	}
	var es []ent
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), "yara-") || !strings.HasSuffix(de.Name(), ".rules") {
			continue
		}
		if fi, err := de.Info(); err == nil {
			es = append(es, ent{de.Name(), fi.ModTime()})
		}
	}
	if len(es) <= cacheKeep {
		return
	}
	sort.Slice(es, func(i, j int) bool { return es[i].mod.After(es[j].mod) })
	for _, e := range es[cacheKeep:] {
		os.Remove(filepath.Join(dir, e.name))
	}
}
