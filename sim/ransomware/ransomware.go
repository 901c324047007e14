// Package ransomware is a harmless ransomware simulator for testing a
// deployment: it encrypts (AES-CTR, so the content looks like real
// ransomware output) only files under the directory it is given that it
// marked first, and undoes everything.
//
// Marking writes DIR/.tillwatch-sim.json (the manifest: every file with its
// SHA-256) and a content-addressed copy of each file under DIR/.tillwatch-sim/,
// so --undo restores exactly what was there, even after a run that was
// killed mid-file. Hidden files and folders are skipped, as real families do.
package ransomware

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/sim/simdir"
)

// Modes are the behaviours real families use.
const (
	ModeInPlace      = "inplace"      // overwrite each file with its ciphertext
	ModeRename       = "rename"       // overwrite, then rename with Ext appended
	ModeNewDelete    = "newdelete"    // write FILE+Ext, then delete the original
	ModeIntermittent = "intermittent" // encrypt 4 KiB of every 64 KiB in place
	ModeStriped      = "striped"      // encrypt every other 16 bytes in place (LockFile)
	// ModeRenameOver reads each file, writes its ciphertext to FILE+TmpExt
	// and renames that over the original: the original is never opened
	// for writing.
	ModeRenameOver = "renameover"
)

// Modes lists the modes one simulator process runs itself (the table of
// the benchmark); AdaptiveModes are driven through other processes.
var Modes = []string{ModeInPlace, ModeRename, ModeNewDelete, ModeIntermittent, ModeStriped}

// Adaptive modes: no process does more than one file, or the encryption
// is done by the machine's own tools (the simulator only drives them).
const (
	// ModeFamily re-executes the simulator once per file (renameover),
	// Workers at a time, as `xargs -P` does: a family of one-file workers.
	ModeFamily = "family"
	// ModeOpenSSLLoop runs `openssl enc` per file and renames the output
	// over the original (`sh -c` loop; `xargs -P Workers sh -c` with more
	// than one worker).
	ModeOpenSSLLoop = "openssl-loop"
	// ModeGPGLoop does the same with `gpg -c`.
	ModeGPGLoop = "gpg-loop"
	// ModeDDLoop overwrites each file with random bytes by `dd` (a wiper).
	ModeDDLoop = "dd-loop"
)

// AdaptiveModes lists the adaptive modes.
var AdaptiveModes = []string{ModeRenameOver, ModeFamily, ModeOpenSSLLoop, ModeGPGLoop, ModeDDLoop}

// Orders in which files are encrypted.
const (
	OrderName    = "name"    // the manifest's (walk) order
	OrderReverse = "reverse" // reverse name order
	OrderSize    = "size"    // largest first
)

// Orders lists every order.
var Orders = []string{OrderName, OrderReverse, OrderSize}

// Names of the marker files in DIR.
const (
	ManifestName = ".tillwatch-sim.json"
	BackupDir    = ".tillwatch-sim"
	Ext          = ".tillsim"
	// TmpExt names the temporary a rename-over writes beside a file.
	TmpExt = ".tillsim-tmp"
)

// Manifest records what was marked.
type Manifest struct {
	Dir   string  `json:"dir"` // the folder marked, absolute
	Key   string  `json:"key"` // AES-256 key, hex
	Files []Entry `json:"files"`
}

// Entry is one marked file, relative to DIR.
type Entry struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Mode   string `json:"mode,omitempty"` // permission bits, octal
	Size   int64  `json:"size"`
}

// Mark records every visible regular file under dir and keeps a copy of
// each. A directory already marked is refused (undo it first), and so is a
// system folder (sim/simdir). Files are opened relative to their opened
// folder without following a symlink, so a file swapped for a link while
// marking is skipped, never read through.
func Mark(dir string) (*Manifest, error) {
	dir, err := simdir.Check(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(filepath.Join(dir, ManifestName)); err == nil {
		return nil, fmt.Errorf("%s is already marked: run with --undo first", dir)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	m := &Manifest{Dir: dir, Key: hex.EncodeToString(key)}
	top, err := atomicfile.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer top.Close()
	if err := top.Mkdir(BackupDir, 0o700); err != nil {
		return nil, fmt.Errorf("mark %s: %w", dir, err)
	}
	backup, err := atomicfile.OpenDir(filepath.Join(dir, BackupDir))
	if err != nil {
		return nil, fmt.Errorf("mark %s: %w", dir, err)
	}
	defer backup.Close()
	err = backup.Private(".")
	if err == nil {
		err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if strings.HasPrefix(d.Name(), ".") && p != dir {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() { // symlinks and devices are never touched
				return nil
			}
			b, mode, err := readNoFollow(p)
			if errors.Is(err, atomicfile.ErrNotRegular) {
				return nil // swapped for a link or a device while walking
			}
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			h := hex.EncodeToString(sum[:])
			if err := backup.Write(h, b, 0o600); err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			m.Files = append(m.Files, Entry{Path: rel, SHA256: h, Mode: fmt.Sprintf("%04o", mode), Size: int64(len(b))})
			return nil
		})
	}
	if err == nil {
		err = writeJSON(top, m)
	}
	if err != nil {
		_ = removeCopies(top, backup)
		return nil, fmt.Errorf("mark %s: %w", dir, err)
	}
	return m, nil
}

// readNoFollow reads the regular file p without following a symlink in
// its folder's path (atomicfile.OpenDir) or at p, and returns its
// permission bits.
func readNoFollow(p string) ([]byte, fs.FileMode, error) {
	d, err := atomicfile.OpenDir(filepath.Dir(p))
	if err != nil {
		return nil, 0, err
	}
	defer d.Close()
	f, err := d.OpenRegular(filepath.Base(p))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(f)
	return b, fi.Mode().Perm(), err
}

// Load reads dir's manifest. The folder may be one other users can write,
// and Undo writes what the manifest says as root, so it is trusted only if
// it is a regular file owned by the user running the simulator, private
// (0600), with one link, naming dir itself: a user can replace it, but
// cannot make a file that passes.
func Load(dir string) (*Manifest, error) {
	dir, b, err := simdir.ReadManifest(dir, ManifestName, 256<<20)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, ManifestName)
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	if m.Dir != dir {
		return nil, fmt.Errorf("manifest %s is for %q, not this folder", p, m.Dir)
	}
	return &m, nil
}

// Options for one encryption run (one worker process).
type Options struct {
	Mode string
	// Worker and Workers split the files: this run takes every Workers-th
	// file starting at Worker.
	Worker, Workers int
	// Rate is this worker's files per second; 0 is as fast as possible.
	Rate float64
	// Order is the order of the files (OrderName when empty).
	Order string
}

// Ordered returns m's files in the given order.
func (m *Manifest) Ordered(order string) []Entry {
	files := slices.Clone(m.Files)
	switch order {
	case OrderReverse:
		slices.Reverse(files)
	case OrderSize:
		slices.SortStableFunc(files, func(a, b Entry) int { return cmp.Compare(b.Size, a.Size) })
	}
	return files
}

// Encrypt runs one worker over dir's marked files. Each is opened
// relative to its opened folder, without following a symlink: a marked
// file swapped for a link is skipped.
func Encrypt(dir string, m *Manifest, o Options) (int, error) {
	if m.Dir != "" {
		dir = m.Dir
	}
	key, err := hex.DecodeString(m.Key)
	if err != nil || len(key) != 32 {
		return 0, errors.New("manifest key is invalid")
	}
	block, _ := aes.NewCipher(key)
	if o.Workers < 1 {
		o.Workers = 1
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	n := 0
	next := time.Now()
	files := m.Ordered(o.Order)
	for i := o.Worker; i < len(files); i += o.Workers {
		if interval > 0 {
			time.Sleep(time.Until(next))
			next = next.Add(interval)
		}
		if !filepath.IsLocal(files[i].Path) {
			return n, fmt.Errorf("manifest path %q leaves %s", files[i].Path, dir)
		}
		p := filepath.Join(dir, files[i].Path)
		err := encryptOne(block, p, o.Mode)
		if errors.Is(err, atomicfile.ErrNotRegular) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// EncryptOne encrypts the marked file rel under dir (a family worker's
// one file) in the given mode.
func EncryptOne(dir string, m *Manifest, rel, mode string) error {
	key, err := hex.DecodeString(m.Key)
	if err != nil || len(key) != 32 {
		return errors.New("manifest key is invalid")
	}
	if !slices.ContainsFunc(m.Files, func(e Entry) bool { return e.Path == rel }) {
		return fmt.Errorf("%s is not a marked file of %s", rel, dir)
	}
	block, _ := aes.NewCipher(key)
	return encryptOne(block, filepath.Join(dir, rel), mode)
}

func encryptOne(block cipher.Block, p, mode string) error {
	d, err := atomicfile.OpenDir(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	name := filepath.Base(p)
	flags := os.O_RDWR
	if mode == ModeRenameOver || mode == ModeFamily {
		flags = os.O_RDONLY // the original is only read: its replacement is renamed over it
	}
	f, err := d.OpenFile(name, flags)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	iv := sha256.Sum256([]byte(p))
	stream := cipher.NewCTR(block, iv[:16])
	switch mode {
	case ModeIntermittent:
		for off := 0; off < len(b); off += 64 << 10 {
			end := min(off+4096, len(b))
			stream.XORKeyStream(b[off:end], b[off:end])
		}
	case ModeStriped:
		// LockFile's pattern: half the bytes stay plaintext, which keeps
		// the entropy of a text file below what looks encrypted.
		for off := 0; off < len(b); off += 32 {
			end := min(off+16, len(b))
			stream.XORKeyStream(b[off:end], b[off:end])
		}
	default:
		stream.XORKeyStream(b, b)
	}
	switch mode {
	case ModeNewDelete:
		if err := d.Write(name+Ext, b, 0o644); err != nil {
			return err
		}
		f.Close()
		return d.Remove(name)
	case ModeRenameOver, ModeFamily:
		// The temporary has the fixed name undo knows to remove (a worker
		// killed between write and rename leaves it behind); created
		// exclusively, so a link planted under that name is never written
		// through.
		if err := d.Remove(name + TmpExt); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		tmp, err := d.OpenFile(name+TmpExt, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return err
		}
		_, err = tmp.Write(b)
		err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
		if err != nil {
			return err
		}
		f.Close()
		return d.Rename(name+TmpExt, name)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if mode == ModeRename {
		return d.Rename(name, name+Ext)
	}
	return nil
}

// Undo restores every marked file from its copy, removes the files the
// simulator could have created (FILE+Ext) and the markers. It touches
// nothing else. It returns how many files it restored. The manifest is
// trusted only as Load says; each name must stay inside dir, is reached
// without following a symlink, and each copy must hash to what the
// manifest records, so a planted link or a forged entry cannot make root
// write outside dir or copy a file it can read into dir.
func Undo(dir string) (int, error) {
	m, err := Load(dir)
	if err != nil {
		return 0, err
	}
	dir = m.Dir
	backup, err := atomicfile.OpenDir(filepath.Join(dir, BackupDir))
	if err != nil {
		return 0, err
	}
	defer backup.Close()
	if err := backup.Private("."); err != nil {
		return 0, fmt.Errorf("copies not trusted: %w", err)
	}
	restored := 0
	var errs []error
	for _, e := range m.Files {
		ok, err := undoOne(dir, backup, e)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			restored++
		}
	}
	if len(errs) > 0 {
		return restored, errors.Join(errs...) // markers kept so a second undo can finish
	}
	top, err := atomicfile.OpenDir(dir)
	if err != nil {
		return restored, err
	}
	defer top.Close()
	if err := removeCopies(top, backup); err != nil {
		return restored, err
	}
	return restored, top.Remove(ManifestName)
}

// removeCopies empties and removes the copies folder, by descriptor: a
// folder swapped in by a user is never walked.
func removeCopies(top, backup *atomicfile.Dir) error {
	names, err := backup.Names()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := backup.Remove(n); err != nil {
			return err
		}
	}
	return top.RemoveDir(BackupDir)
}

// undoOne restores one entry; false with no error when it was intact.
func undoOne(dir string, backup *atomicfile.Dir, e Entry) (bool, error) {
	if !filepath.IsLocal(e.Path) {
		return false, fmt.Errorf("manifest path %q leaves %s; skipped", e.Path, dir)
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size {
		return false, fmt.Errorf("manifest digest %q of %s is not a SHA-256; skipped", e.SHA256, e.Path)
	}
	mode := fs.FileMode(0o644)
	if e.Mode != "" {
		v, err := strconv.ParseUint(e.Mode, 8, 32)
		if err != nil || v > 0o777 {
			return false, fmt.Errorf("manifest mode %q of %s; skipped", e.Mode, e.Path)
		}
		mode = fs.FileMode(v)
	}
	p := filepath.Join(dir, e.Path)
	d, err := atomicfile.OpenDir(filepath.Dir(p))
	if err != nil {
		return false, err
	}
	defer d.Close()
	name := filepath.Base(p)
	leftovers := []string{name + Ext, name + TmpExt}
	if names, err := d.Names(); err == nil {
		for _, n := range names {
			if isWriteTemp(n, name+Ext) {
				leftovers = append(leftovers, n)
			}
		}
	}
	for _, leftover := range leftovers {
		if err := d.Remove(leftover); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	if cur, err := d.ReadRegular(name, 1<<40); err == nil {
		if sum := sha256.Sum256(cur); hex.EncodeToString(sum[:]) == e.SHA256 {
			return false, nil
		}
	}
	b, err := backup.ReadRegular(e.SHA256, 1<<40)
	if err != nil {
		return false, fmt.Errorf("copy of %s: %w", e.Path, err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.SHA256 {
		return false, fmt.Errorf("copy of %s does not match its digest; skipped", e.Path)
	}
	if err := d.Write(name, b, mode); err != nil {
		return false, err
	}
	return true, nil
}

// isWriteTemp reports whether n is the temporary file atomicfile's Write
// makes for name (".NAME.<16 hex digits>.tmp"): a simulator killed between
// creating it and renaming it into place (the sensor's stop) leaves it.
func isWriteTemp(n, name string) bool {
	mid, ok := strings.CutPrefix(n, "."+name+".")
	if !ok {
		return false
	}
	mid, ok = strings.CutSuffix(mid, ".tmp")
	if !ok || len(mid) != 16 {
		return false
	}
	_, err := hex.DecodeString(mid)
	return err == nil
}

func writeJSON(d *atomicfile.Dir, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	return d.Write(ManifestName, b, 0o600)
}
