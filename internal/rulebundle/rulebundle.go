// Package rulebundle is the signed rule bundle a collector serves and every
// sensor checks before it loads a single rule: a manifest (serial number,
// name, the archive's SHA-256) signed with Ed25519 by a rule author's key,
// and a tar.gz of rule folders (exec/, yara/, rmm/, sigma/, ransomware/).
//
// A rule set decides what the sensor kills in enforce mode, so rules are
// signed by people (keys the sensor pins from its own config), never by the
// collector: a compromised collector can withhold a bundle but not forge
// one. The signature is checked over the manifest bytes before they are
// parsed, the archive against the manifest's hash before it is opened, and
// every archive entry against size, type and path rules before it is
// written.
package rulebundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// Version is the manifest format version.
const Version = 1

// Limits.
const (
	MaxBundle   = 24 << 20 // the whole signed file
	MaxFiles    = 5000
	MaxFileSize = 4 << 20
	MaxTotal    = 64 << 20 // unpacked
	MaxManifest = 16 << 10
)

// Folders a bundle may carry: the rule kinds the sensor loads.
var Folders = []string{"exec", "ransomware", "rmm", "sigma", "yara"}

const domain = "tillwatch-rules-v1\x00"

// Manifest is what the signature covers.
type Manifest struct {
	V             int       `json:"v"`
	Serial        int64     `json:"serial"` // strictly increasing; sensors refuse older ones
	Name          string    `json:"name"`
	Created       time.Time `json:"created"`
	ArchiveSHA256 string    `json:"archive_sha256"`
	Files         int       `json:"files"`
}

// Bundle is the wire form: one JSON document.
type Bundle struct {
	Manifest   []byte                 `json:"manifest"` // canonical JSON, base64 on the wire
	Signatures []killswitch.Signature `json:"signatures"`
	Archive    []byte                 `json:"archive"` // tar.gz
}

// Build packs the rule folders under dir into a bundle signed with priv.
func Build(dir string, serial int64, name string, priv ed25519.PrivateKey, now time.Time) ([]byte, Manifest, error) {
	if serial <= 0 {
		return nil, Manifest{}, errors.New("rule bundle: serial must be positive")
	}
	archive, n, err := pack(dir)
	if err != nil {
		return nil, Manifest{}, err
	}
	sum := sha256.Sum256(archive)
	m := Manifest{V: Version, Serial: serial, Name: name, Created: now.UTC(), ArchiveSHA256: hex.EncodeToString(sum[:]), Files: n}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, m, err
	}
	sig := ed25519.Sign(priv, append([]byte(domain), mb...))
	b, err := json.Marshal(Bundle{Manifest: mb, Archive: archive, Signatures: []killswitch.Signature{{
		KeyID: killswitch.KeyID(priv.Public().(ed25519.PublicKey)), Sig: sig}}})
	if err != nil {
		return nil, m, err
	}
	if len(b) > MaxBundle {
		return nil, m, fmt.Errorf("rule bundle is %d bytes, at most %d", len(b), MaxBundle)
	}
	return b, m, nil
}

// pack writes the allowed folders of dir into a deterministic tar.gz.
func pack(dir string) ([]byte, int, error) {
	var files []string
	for _, f := range Folders {
		root := filepath.Join(dir, f)
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				rel, err := filepath.Rel(dir, p)
				if err != nil {
					return err
				}
				files = append(files, filepath.ToSlash(rel))
			} else if !d.IsDir() {
				return fmt.Errorf("%s: only regular files and folders go into a rule bundle", p)
			}
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	if len(files) == 0 {
		return nil, 0, fmt.Errorf("%s holds none of the rule folders %v", dir, Folders)
	}
	if len(files) > MaxFiles {
		return nil, 0, fmt.Errorf("%d files, at most %d", len(files), MaxFiles)
	}
	sort.Strings(files)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, 0, err
		}
		if len(b) > MaxFileSize {
			return nil, 0, fmt.Errorf("%s is %d bytes, at most %d", f, len(b), MaxFileSize)
		}
		if err := tw.WriteHeader(&tar.Header{Name: f, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, 0, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), len(files), nil
}

// Open checks a bundle against the pinned rule-signing keys and returns
// its manifest and archive. Nothing of the manifest is parsed before a
// pinned key's signature over it verified, and the archive is returned
// only if it hashes to what the manifest says.
func Open(b []byte, keys []killswitch.PublicKey) (Manifest, []byte, error) {
	var m Manifest
	if len(b) > MaxBundle {
		return m, nil, fmt.Errorf("rule bundle is %d bytes, at most %d", len(b), MaxBundle)
	}
	var bun Bundle
	if err := json.Unmarshal(b, &bun); err != nil {
		return m, nil, fmt.Errorf("rule bundle: not a bundle: %w", err)
	}
	if len(bun.Manifest) == 0 || len(bun.Manifest) > MaxManifest {
		return m, nil, errors.New("rule bundle: missing or oversized manifest")
	}
	if !signedByPinned(&bun, keys) {
		return m, nil, errors.New("rule bundle: not signed by a pinned rule-signing key (rules.bundle_keys)")
	}
	dec := json.NewDecoder(bytes.NewReader(bun.Manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, nil, fmt.Errorf("rule bundle: manifest: %w", err)
	}
	if m.V != Version || m.Serial <= 0 {
		return m, nil, fmt.Errorf("rule bundle: manifest version %d, serial %d", m.V, m.Serial)
	}
	sum := sha256.Sum256(bun.Archive)
	if hex.EncodeToString(sum[:]) != m.ArchiveSHA256 {
		return m, nil, errors.New("rule bundle: the archive does not match the signed manifest")
	}
	return m, bun.Archive, nil
}

// PeekSerial reads a bundle's serial without checking its signature, for
// a collector that serves bundles it does not pin keys for: the sensors
// verify. Never use what it returns to decide what to load.
func PeekSerial(b []byte) (int64, error) {
	var bun Bundle
	if len(b) > MaxBundle || json.Unmarshal(b, &bun) != nil {
		return 0, errors.New("rule bundle: not a bundle")
	}
	var m Manifest
	if err := json.Unmarshal(bun.Manifest, &m); err != nil || m.Serial <= 0 {
		return 0, errors.New("rule bundle: no serial in the manifest")
	}
	return m.Serial, nil
}

func signedByPinned(b *Bundle, keys []killswitch.PublicKey) bool {
	msg := append([]byte(domain), b.Manifest...)
	for _, s := range b.Signatures {
		for _, k := range keys {
			if killswitch.KeyID(k.Key) == s.KeyID && ed25519.Verify(k.Key, msg, s.Sig) {
				return true
			}
		}
	}
	return false
}

// Extract unpacks a verified archive into dst (which must not exist):
// regular files only, each under one of Folders, no "..", no absolute or
// odd paths, within the size limits. On any error dst is removed.
func Extract(archive []byte, dst string) (err error) {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("rule bundle: %s exists", dst)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("rule bundle: archive: %w", err)
	}
	tr := tar.NewReader(zr)
	var files int
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("rule bundle: archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			return fmt.Errorf("rule bundle: %q is not a regular file", h.Name)
		}
		if err := checkName(h.Name); err != nil {
			return err
		}
		files++
		total += h.Size
		if files > MaxFiles || h.Size > MaxFileSize || total > MaxTotal || h.Size < 0 {
			return fmt.Errorf("rule bundle: %q exceeds the limits (files %d, file %d bytes, total %d bytes)", h.Name, MaxFiles, MaxFileSize, MaxTotal)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("rule bundle: %w", err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, h.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("rule bundle: %w", err)
		}
	}
	if files == 0 {
		return errors.New("rule bundle: empty archive")
	}
	return nil
}

func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) ||
		path.Clean(name) != name || strings.HasPrefix(name, "../") || name == ".." {
		return fmt.Errorf("rule bundle: unsafe path %q", name)
	}
	top, _, ok := strings.Cut(name, "/")
	if !ok {
		return fmt.Errorf("rule bundle: %q is not inside a rule folder", name)
	}
	for _, f := range Folders {
		if top == f {
			return nil
		}
	}
	return fmt.Errorf("rule bundle: %q is not under one of %v", name, Folders)
}
