// Package canary plants decoy files in the watched folders and restores
// them. A decoy is a real document (PDF, DOCX, CSV) with a plausible name
// that sorts first or last in its folder, so an encryptor walking the folder
// in name order reaches one before any real file; it is not hidden, since
// ransomware skips hidden files. The file guard stops whoever writes,
// renames or deletes one.
//
// The index (which paths are decoys, and their content) lives in the state
// directory, so decoys survive restarts and a tampered one is put back.
//
// Names carry a number drawn once per install (kept in the state
// directory), like the reference numbers real archives carry: the names are
// plausible to an encryptor's directory walk yet unlikely on any other
// file of the host, which lets the kernel match a decoy by its basename
// alone (sensor/kernel). Judge tells a planted decoy from a same-named file
// elsewhere.
package canary

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
)

// Decoy is one planted file.
type Decoy struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Set is the decoys of one sensor. Safe for concurrent use.
type Set struct {
	dir string // <state>/canaries
	mu  sync.Mutex
	m   map[string]Decoy
	ids map[string]fileID // the planted file at each decoy path, as last planted or restored
	// rewritten is called after Restore wrote a decoy anew (another
	// file identity); nil: nobody asked.
	rewritten func()
}

// OnRewrite sets fn to be called after a decoy was written anew by Restore
// (it is then another file, by identity): the kernel layer, which knows
// decoys by identity too, is told. fn must not call back into the Set's
// Restore.
func (s *Set) OnRewrite(fn func()) {
	s.mu.Lock()
	s.rewritten = fn
	s.mu.Unlock()
}

// fileID is a file's identity: a decoy replaced (rename over, delete and
// create) gets another.
type fileID struct{ dev, ino uint64 }

// First and last names: they sort before digits and after letters in byte
// order, and read like files a shop keeps. %s is the install's number.
var (
	firstNames = []string{"0000 Accounts 2019 %s.pdf", "0000_Invoices_archive_%s.docx", "0000-Suppliers-%s.csv", "0000 Payroll 2020 %s.pdf"}
	lastNames  = []string{"zz_Receipts_scan_%s.pdf", "zz Tax return 2021 %s.docx", "zz-Stocktake-%s.csv", "zz_Contracts_signed_%s.pdf"}
)

// installNumber returns the install's decoy number (five digits, drawn
// once, kept in dir/number).
func installNumber(dir string) (string, error) {
	p := filepath.Join(dir, "number")
	if b, err := os.ReadFile(p); err == nil {
		n := strings.TrimSpace(string(b))
		if len(n) == 5 && strings.Trim(n, "0123456789") == "" {
			return n, nil
		}
		return "", fmt.Errorf("canary number %s: want five digits, found %q", p, n)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("canary number: %w", err)
	}
	n := fmt.Sprintf("%05d", 10000+rand.IntN(90000))
	if err := atomicfile.Write(p, []byte(n+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("canary number: %w", err)
	}
	return n, nil
}

// Plant loads the index from stateDir and makes sure every folder in dirs
// has its two decoys, restoring any that were changed or removed. A file
// that exists under a decoy's name but is not in the index is the user's
// and is left alone (that folder gets no decoy of that name).
func Plant(stateDir string, dirs []string) (*Set, error) {
	s := &Set{dir: filepath.Join(stateDir, "canaries"), m: map[string]Decoy{}, ids: map[string]fileID{}}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("canary state: %w", err)
	}
	num, err := installNumber(s.dir)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "index.json")); err == nil {
		var ds []Decoy
		if err := json.Unmarshal(b, &ds); err != nil {
			return nil, fmt.Errorf("canary index %s: %w", filepath.Join(s.dir, "index.json"), err)
		}
		for _, d := range ds {
			s.m[d.Path] = d
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("canary index: %w", err)
	}
	var errs []error
	// Decoys of an earlier naming stay decoys (restored and guarded): a
	// user may have seen them, and removing a file is never ours to do.
	for p := range s.m {
		if err := s.Restore(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range dirs {
		h := fnv.New32a()
		h.Write([]byte(dir))
		i := int(h.Sum32())
		for _, f := range []string{firstNames[i%len(firstNames)], lastNames[(i/7)%len(lastNames)]} {
			name := fmt.Sprintf(f, num)
			if err := s.ensure(filepath.Join(dir, name), uint64(h.Sum32())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := s.save(); err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// ensure plants p or restores it.
func (s *Set) ensure(p string, seed uint64) error {
	s.mu.Lock()
	d, ours := s.m[p]
	s.mu.Unlock()
	if !ours {
		if _, err := os.Lstat(p); err == nil {
			return nil // the user's file; never overwrite it
		}
		content, err := generate(filepath.Ext(p), seed)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(content)
		d = Decoy{Path: p, SHA256: hex.EncodeToString(sum[:])}
		if err := os.WriteFile(filepath.Join(s.dir, d.SHA256), content, 0o600); err != nil {
			return fmt.Errorf("canary blob: %w", err)
		}
		s.mu.Lock()
		s.m[p] = d
		s.mu.Unlock()
	}
	return s.Restore(p)
}

// Is reports whether p is a decoy.
func (s *Set) Is(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[p]
	return ok
}

// Paths lists the decoys.
func (s *Set) Paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for p := range s.m {
		out = append(out, p)
	}
	return out
}

// maxDecoy bounds how much of a file at a decoy's path Restore reads to
// compare it (decoys are at most ~120 KiB).
const maxDecoy = 4 << 20

// Restore puts decoy p back if it is missing or changed. The folder is
// one users can write, so everything happens relative to the opened
// folder: the current file is read only if it is a regular file (never
// through a symlink, never blocking on a FIFO), and the decoy is written
// to a random temporary name created exclusively and renamed over p, which
// replaces a symlink planted at p rather than writing to its target.
func (s *Set) Restore(p string) error {
	s.mu.Lock()
	d, ok := s.m[p]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s is not a decoy", p)
	}
	dir, err := atomicfile.OpenDir(filepath.Dir(p))
	if err != nil {
		return fmt.Errorf("restore %s: %w", p, err)
	}
	defer dir.Close()
	name := filepath.Base(p)
	if b, err := dir.ReadRegular(name, maxDecoy); err == nil {
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) == d.SHA256 {
			s.record(p)
			return nil
		}
	}
	content, err := os.ReadFile(filepath.Join(s.dir, d.SHA256))
	if err != nil {
		return fmt.Errorf("canary blob for %s: %w", p, err)
	}
	if err := dir.Write(name, content, 0o644); err != nil {
		return fmt.Errorf("restore %s: %w", p, err)
	}
	s.record(p)
	s.mu.Lock()
	fn := s.rewritten
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
	return nil
}

// changedInPlace reports whether the regular file at decoy p no longer
// holds the planted content (a file that cannot be read as a regular
// file, or another decoy path, is not reported here: identity checks
// cover those).
func (s *Set) changedInPlace(p string) bool {
	s.mu.Lock()
	d, ok := s.m[p]
	s.mu.Unlock()
	if !ok {
		return false
	}
	dir, err := atomicfile.OpenDir(filepath.Dir(p))
	if err != nil {
		return false
	}
	defer dir.Close()
	b, err := dir.ReadRegular(filepath.Base(p), maxDecoy)
	if err != nil {
		return false
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) != d.SHA256
}

// record remembers the identity of the file planted at p.
func (s *Set) record(p string) {
	id, ok := lstatID(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.ids[p] = id
	} else {
		delete(s.ids, p)
	}
}

// Names lists the decoys' basenames (what the kernel tripwire compares).
func (s *Set) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	out := make([]string, 0, len(s.m))
	for p := range s.m {
		if b := filepath.Base(p); !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

// RestoreAll puts every decoy back; it reports every failure.
func (s *Set) RestoreAll() error {
	var errs []error
	for _, p := range s.Paths() {
		if err := s.Restore(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Set) save() error {
	s.mu.Lock()
	ds := make([]Decoy, 0, len(s.m))
	for _, d := range s.m {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	b, err := json.MarshalIndent(ds, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, "index.json"), b, 0o600); err != nil {
		return fmt.Errorf("canary index: %w", err)
	}
	return nil
}

// generate makes a real document of the extension's format, with a size
// that varies by seed (8-120 KiB) so decoys are not all alike.
func generate(ext string, seed uint64) ([]byte, error) {
	r := rand.New(rand.NewPCG(seed, 0x7111))
	rows := 200 + r.IntN(3000)
	var text strings.Builder
	items := []string{"Bread", "Milk 1L", "Coffee 500g", "Eggs x12", "Butter", "Apples 1kg", "Detergent", "Cheese"}
	for i := range rows {
		fmt.Fprintf(&text, "2021-%02d-%02d,%d,%s,%d.%02d\n", 1+i%12, 1+i%28, 1000+r.IntN(9000), items[r.IntN(len(items))], r.IntN(200), r.IntN(100))
	}
	switch strings.ToLower(ext) {
	case ".csv":
		return []byte("date,receipt,item,amount\n" + text.String()), nil
	case ".pdf":
		return pdf(text.String()), nil
	case ".docx":
		return docx(text.String())
	}
	return nil, fmt.Errorf("no decoy format for %q", ext)
}

// pdf writes a minimal, valid one-page PDF with the text as its content.
func pdf(text string) []byte {
	var stream strings.Builder
	stream.WriteString("BT /F1 9 Tf 40 800 Td 11 TL\n")
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(&stream, "(%s) '\n", strings.NewReplacer("(", "", ")", "", "\\", "").Replace(line))
	}
	stream.WriteString("ET")
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", stream.Len(), stream.String()),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

// docx writes a minimal Office Open XML document.
func docx(text string) ([]byte, error) {
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	var body strings.Builder
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(&body, "<w:p><w:r><w:t>%s</w:t></w:r></w:p>", line)
	}
	parts := [][2]string{
		{"[Content_Types].xml", `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`},
		{"_rels/.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>`},
		{"word/document.xml", `<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>` + body.String() + `</w:body></w:document>`},
	}
	for _, p := range parts {
		w, err := z.Create(p[0])
		if err != nil {
			return nil, err
		}
		if _, err := w.Write([]byte(p[1])); err != nil {
			return nil, err
		}
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
