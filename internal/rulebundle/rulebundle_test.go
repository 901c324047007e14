package rulebundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/killswitch"
)

func newKey(t testing.TB) (ed25519.PrivateKey, killswitch.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: "rules"}
}

func ruleTree(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"yara/note.yar":                       "rule note { strings: $a = \"pay\" condition: $a }\n",
		"sigma/x.yml":                         "title: x\n",
		"rmm/catalog_extra.yaml":              "products: []\n",
		"yara/tests/note/positive/sample.txt": "pay now\n",
		"README.md":                           "not a rule folder: left out\n",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildOpenExtract(t *testing.T) {
	priv, pub := newKey(t)
	dir := ruleTree(t)
	b, m, err := Build(dir, 7, "weekly 48", priv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if m.Files != 4 || m.Serial != 7 {
		t.Fatalf("manifest %+v: want 4 files (README left out), serial 7", m)
	}
	again, _, err := Build(dir, 7, "weekly 48", priv, m.Created)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatal("the same tree, serial and time did not give the same bundle")
	}
	got, archive, err := Open(b, []killswitch.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if got.Serial != 7 || got.Name != "weekly 48" {
		t.Fatalf("opened %+v", got)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := Extract(archive, dst); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"yara/note.yar", "sigma/x.yml", "rmm/catalog_extra.yaml", "yara/tests/note/positive/sample.txt"} {
		want, _ := os.ReadFile(filepath.Join(dir, p))
		have, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || !bytes.Equal(want, have) {
			t.Fatalf("%s differs after the round trip: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); err == nil {
		t.Fatal("a file outside the rule folders was packed")
	}
	if err := Extract(archive, dst); err == nil {
		t.Fatal("extracted over an existing directory")
	}
}

// TestOpenRefuses: every way a bundle can be wrong is refused before any
// rule is read.
func TestOpenRefuses(t *testing.T) {
	priv, pub := newKey(t)
	other, _ := newKey(t)
	good, _, err := Build(ruleTree(t), 3, "n", priv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var bun Bundle
	json.Unmarshal(good, &bun)
	mutate := func(f func(*Bundle)) []byte {
		c := bun
		c.Manifest = bytes.Clone(bun.Manifest)
		c.Archive = bytes.Clone(bun.Archive)
		c.Signatures = append([]killswitch.Signature(nil), bun.Signatures...)
		f(&c)
		b, _ := json.Marshal(c)
		return b
	}
	signedByOther, _, _ := Build(ruleTree(t), 3, "n", other, time.Now())
	cases := map[string][]byte{
		"garbage":           []byte("not json"),
		"unpinned key":      signedByOther,
		"unsigned":          mutate(func(b *Bundle) { b.Signatures = nil }),
		"tampered manifest": mutate(func(b *Bundle) { b.Manifest = bytes.Replace(b.Manifest, []byte(`"serial":3`), []byte(`"serial":9`), 1) }),
		"tampered archive":  mutate(func(b *Bundle) { b.Archive[len(b.Archive)-5] ^= 0xff }),
		"oversized":         make([]byte, MaxBundle+1),
	}
	for name, b := range cases {
		if _, _, err := Open(b, []killswitch.PublicKey{pub}); err == nil {
			t.Errorf("%s: opened", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
}

// signedArchive signs a hand-made archive, as an attacker holding a key
// (or a buggy tool) could: Extract must still refuse what is unsafe.
func signedArchive(t *testing.T, entries []tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		h := h
		tw.WriteHeader(&h)
		if h.Typeflag == tar.TypeReg {
			tw.Write(make([]byte, h.Size))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestExtractRefusesUnsafeEntries(t *testing.T) {
	cases := map[string]tar.Header{
		"traversal":        {Name: "yara/../../etc/cron.d/x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"absolute":         {Name: "/etc/passwd", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"outside folders":  {Name: "bin/sh", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"symlink":          {Name: "yara/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"},
		"hard link":        {Name: "yara/link", Typeflag: tar.TypeLink, Linkname: "yara/x"},
		"device":           {Name: "yara/dev", Typeflag: tar.TypeChar},
		"oversized file":   {Name: "yara/big.yar", Typeflag: tar.TypeReg, Size: MaxFileSize + 1, Mode: 0o644},
		"top-level file":   {Name: "yara", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"dot segments":     {Name: "yara/./x.yar", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"backslash escape": {Name: `yara\..\..\x`, Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			if err := Extract(signedArchive(t, []tar.Header{h}), dst); err == nil {
				t.Fatal("extracted")
			}
			if _, err := os.Stat(dst); err == nil {
				t.Fatal("a refused archive left its directory behind")
			}
		})
	}
}

func FuzzOpenExtract(f *testing.F) {
	priv, pub := newKey(f)
	good, _, err := Build(ruleTree(f), 1, "seed", priv, time.Unix(0, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"manifest":"e30=","signatures":[],"archive":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, archive, err := Open(b, []killswitch.PublicKey{pub})
		if err != nil {
			return
		}
		sum := sha256.Sum256(archive)
		if hex.EncodeToString(sum[:]) != m.ArchiveSHA256 {
			t.Fatal("opened an archive that does not match its manifest")
		}
		_ = Extract(archive, filepath.Join(t.TempDir(), "out"))
	})
}
