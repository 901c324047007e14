// Package archive packs the rule tree into the deterministic gzip'd tar the
// binaries embed, and unpacks it. It has no embedded data of its own, so
// the packer can build before the archive exists.
package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"testing/fstest"
	"time"
)

// Sources are the patterns of the rule files that are built in, relative to
// the rules folder. A new rule folder adds its pattern here.
var Sources = []string{
	"exec/*.yaml",
	"rmm/*.yaml",
	"sigma/*.yml", "sigma/tests/*/*/*.json",
	"yara/*.yar",
	"ransomware/*.yaml",
}

// Unpack reads an archive made by Pack into a read-only file system.
func Unpack(raw []byte) (fs.FS, error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	out := fstest.MapFS{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg || !fs.ValidPath(h.Name) {
			return nil, fmt.Errorf("unexpected entry %q", h.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, 16<<20))
		if err != nil {
			return nil, err
		}
		out[h.Name] = &fstest.MapFile{Data: data, Mode: 0o444}
	}
}

// Pack archives the files of src matching Sources, in name order with fixed
// metadata, so the same files always give the same archive contents.
func Pack(src fs.FS) ([]byte, error) {
	var names []string
	for _, pat := range Sources {
		m, err := fs.Glob(src, pat)
		if err != nil {
			return nil, err
		}
		names = append(names, m...)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, n := range names {
		if strings.HasPrefix(path.Base(n), ".") {
			continue
		}
		data, err := fs.ReadFile(src, n)
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Name: n, Mode: 0o444, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
