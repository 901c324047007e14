package packaging

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// glibcLibs are the libraries of Debian's libc6 a cgo binary may link
// dynamically. Anything else would be a runtime dependency the package does
// not declare (libyara must be linked statically: build/pkgconfig/yara.pc).
var glibcLibs = map[string]bool{
	"libc.so.6": true, "libm.so.6": true, "libpthread.so.0": true, "libdl.so.2": true,
	"librt.so.1": true, "libresolv.so.2": true, "libutil.so.1": true, "libanl.so.1": true,
	"ld-linux-x86-64.so.2": true, "ld-linux-aarch64.so.1": true, "ld-linux-armhf.so.3": true,
	"ld-linux.so.2": true, "ld-linux.so.3": true, "ld64.so.2": true, "ld64.so.1": true,
}

// sharedLibDepends returns the Depends entry a binary needs: nothing for a
// static binary, "libc6 (>= X)" for one linked against glibc, where X is the
// newest GLIBC_ symbol version it imports. A dynamic library outside glibc
// is an error naming it.
func sharedLibDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("%s: shared libraries: %w", path, err)
	}
	if len(libs) == 0 {
		return nil, nil
	}
	for _, l := range libs {
		if !glibcLibs[l] {
			return nil, fmt.Errorf("%s links %s dynamically, which no till has: link it statically (make build; see build/pkgconfig/yara.pc)", path, l)
		}
	}
	syms, err := f.ImportedSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("%s: imported symbols: %w", path, err)
	}
	newest := ""
	for _, s := range syms {
		if v, ok := strings.CutPrefix(s.Version, "GLIBC_"); ok && versionLess(newest, v) {
			newest = v
		}
	}
	if newest == "" {
		return []string{"libc6"}, nil
	}
	return []string{"libc6 (>= " + newest + ")"}, nil
}

// versionLess compares dotted numeric versions ("2.34" < "2.4" is false);
// an empty a is less than anything, a non-numeric b is never greater.
func versionLess(a, b string) bool {
	if a == "" {
		return numeric(b)
	}
	if !numeric(b) {
		return false
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func numeric(v string) bool {
	for _, p := range strings.Split(v, ".") {
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return v != ""
}

// target is what a Go binary was built for, from its build information.
type target struct {
	goos, goarch, goarm string
	cgo                 bool
	tags                []string
}

func readTarget(path string) (target, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return target{}, fmt.Errorf("%s: not a Go binary: %w", path, err)
	}
	var t target
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			t.goos = s.Value
		case "GOARCH":
			t.goarch = s.Value
		case "GOARM":
			t.goarm = s.Value
		case "CGO_ENABLED":
			t.cgo = s.Value == "1"
		case "-tags":
			t.tags = strings.Split(s.Value, ",")
		}
	}
	return t, nil
}

// nfpmArch is the architecture name nfpm maps to Debian's ("arm7" ->
// armhf, "386" -> i386; amd64 and arm64 stay).
func (t target) nfpmArch() string {
	if t.goarch == "arm" {
		return "arm" + strings.TrimSuffix(strings.TrimSuffix(t.goarm, ",softfloat"), ",hardfloat")
	}
	return t.goarch
}

// versionSymbol is the variable the Makefile stamps with -X.
const versionSymbol = "github.com/tillwatch/tillwatch/internal/buildinfo.Version"

// stampedVersion reads buildinfo.Version out of a (not stripped, not
// position-independent) Go ELF binary without running it, so a package is
// never built from binaries of another version. ok is false when the value
// cannot be read that way; the caller then skips the check.
func stampedVersion(path string) (v string, ok bool) {
	f, err := elf.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return "", false
	}
	word := 8
	if f.Class == elf.ELFCLASS32 {
		word = 4
	}
	for _, s := range syms {
		if s.Name != versionSymbol {
			continue
		}
		hdr, ok := readAt(f, s.Value, uint64(2*word))
		if !ok {
			return "", false
		}
		var ptr, n uint64
		if word == 8 {
			ptr, n = f.ByteOrder.Uint64(hdr[:8]), f.ByteOrder.Uint64(hdr[8:])
		} else {
			ptr, n = uint64(f.ByteOrder.Uint32(hdr[:4])), uint64(f.ByteOrder.Uint32(hdr[4:]))
		}
		if ptr == 0 || n == 0 || n > 256 {
			return "", false
		}
		b, ok := readAt(f, ptr, n)
		if !ok {
			return "", false
		}
		return string(b), true
	}
	return "", false
}

// readAt reads n bytes at virtual address addr from the section holding it.
func readAt(f *elf.File, addr, n uint64) ([]byte, bool) {
	for _, sec := range f.Sections {
		if sec.Type == elf.SHT_NOBITS || addr < sec.Addr || addr+n > sec.Addr+sec.Size {
			continue
		}
		b := make([]byte, n)
		if _, err := sec.ReadAt(b, int64(addr-sec.Addr)); err != nil {
			return nil, false
		}
		return b, true
	}
	return nil, false
}
