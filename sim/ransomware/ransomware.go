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
	"strings"
	"time"
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
	Key   string  `json:"key"` // AES-256 key, hex
	Files []Entry `json:"files"`
}

// Entry is one marked file, relative to DIR.
type Entry struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Mark records every visible regular file under dir and keeps a copy of
// each. A directory already marked is refused (undo it first).
func Mark(dir string) (*Manifest, error) {
	if _, err := os.Lstat(filepath.Join(dir, ManifestName)); err == nil {
		return nil, fmt.Errorf("%s is already marked: run with --undo first", dir)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	m := &Manifest{Key: hex.EncodeToString(key)}
	backup := filepath.Join(dir, BackupDir)
	if err := os.Mkdir(backup, 0o700); err != nil {
		return nil, fmt.Errorf("mark %s: %w", dir, err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(backup, h), b, 0o600); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m.Files = append(m.Files, Entry{Path: rel, SHA256: h, Size: int64(len(b))})
		return nil
	})
	if err == nil {
		err = writeJSON(filepath.Join(dir, ManifestName), m)
	}
	if err != nil {
		_ = os.RemoveAll(backup)
		return nil, fmt.Errorf("mark %s: %w", dir, err)
	}
	return m, nil
}

// Load reads dir's manifest.
func Load(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, fmt.Errorf("%s is not marked (%w): run without --undo first", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", filepath.Join(dir, ManifestName), err)
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

// Encrypt runs one worker over dir's marked files.
func Encrypt(dir string, m *Manifest, o Options) (int, error) {
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
		p := filepath.Join(dir, files[i].Path)
		if err := encryptOne(block, p, o.Mode); err != nil {
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
	flags := os.O_RDWR
	if mode == ModeRenameOver || mode == ModeFamily {
		flags = os.O_RDONLY // the original is only read: its replacement is renamed over it
	}
	f, err := os.OpenFile(p, flags, 0)
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
		if err := os.WriteFile(p+Ext, b, 0o644); err != nil {
			return err
		}
		f.Close()
		return os.Remove(p)
	case ModeRenameOver, ModeFamily:
		if err := os.WriteFile(p+TmpExt, b, 0o644); err != nil {
			return err
		}
		f.Close()
		return os.Rename(p+TmpExt, p)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if mode == ModeRename {
		return os.Rename(p, p+Ext)
	}
	return nil
}

// Undo restores every marked file from its copy, removes the files the
// simulator could have created (FILE+Ext) and the markers. It touches
// nothing else. It returns how many files it restored.
func Undo(dir string) (int, error) {
	m, err := Load(dir)
	if err != nil {
		return 0, err
	}
	backup := filepath.Join(dir, BackupDir)
	restored := 0
	var errs []error
	for _, e := range m.Files {
		if !filepath.IsLocal(e.Path) {
			errs = append(errs, fmt.Errorf("manifest path %q leaves %s; skipped", e.Path, dir))
			continue
		}
		p := filepath.Join(dir, e.Path)
		_ = os.Remove(p + Ext)
		_ = os.Remove(p + TmpExt)
		if cur, err := os.ReadFile(p); err == nil {
			if sum := sha256.Sum256(cur); hex.EncodeToString(sum[:]) == e.SHA256 {
				continue
			}
		}
		b, err := os.ReadFile(filepath.Join(backup, e.SHA256))
		if err != nil {
			errs = append(errs, fmt.Errorf("copy of %s: %w", e.Path, err))
			continue
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		restored++
	}
	if len(errs) > 0 {
		return restored, errors.Join(errs...) // markers kept so a second undo can finish
	}
	if err := os.RemoveAll(backup); err != nil {
		return restored, err
	}
	return restored, os.Remove(filepath.Join(dir, ManifestName))
}

func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o600)
}
