package yara

import (
	"bytes"
	"encoding/binary"
	"path"
	"strings"
)

// HeadSize is how many leading bytes of a file Filetype looks at.
const HeadSize = 512

// Filetype names a file's type, as the filetype external that LOKI/THOR
// style public rule sets (signature-base) test: from the magic bytes
// first, then from the content of a text file, then from the extension of
// a file the first two did not identify. It is the table in docs/rules.md
// ("YARA signatures", filetype); "" when nothing fits. A file cloaked with
// another extension (an EXE named .jpg) is still "EXE": that is what such
// rules look for.
func Filetype(head []byte, name string) string {
	if t := magicType(head); t != "" {
		return t
	}
	if t := textType(head); t != "" {
		return t
	}
	return extTypes[strings.ToLower(path.Ext(name))]
}

// magics are prefixes that name a binary format.
var magics = []struct {
	prefix string
	typ    string
}{
	{"MZ", "EXE"},
	{"\x7fELF", "ELF"},
	{"\xfe\xed\xfa\xce", "MACH-O"}, {"\xfe\xed\xfa\xcf", "MACH-O"}, {"\xce\xfa\xed\xfe", "MACH-O"}, {"\xcf\xfa\xed\xfe", "MACH-O"},
	{"MDMP", "MDMP"},
	{"PK\x03\x04", "ZIP"}, {"PK\x05\x06", "ZIP"},
	{"Rar!\x1a\x07", "RAR"},
	{"7z\xbc\xaf\x27\x1c", "7ZIP"},
	{"\x1f\x8b", "GZIP"},
	{"{\\rtf", "RTF"},
	{"%PDF-", "PDF"},
	{"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"},
	{"\x89PNG\r\n\x1a\n", "PNG"},
	{"\xff\xd8\xff", "JPEG"},
	{"GIF87a", "GIF"}, {"GIF89a", "GIF"},
	{"#!", "SCRIPT"}, // refined by the interpreter below
}

// shebangs refine "#!" by the interpreter's base name (a prefix of it:
// python3.11 is python).
var shebangs = []struct{ prefix, typ string }{
	{"python", "Python"}, {"php", "PHP"}, {"pwsh", "PowerShell"}, {"powershell", "PowerShell"},
}

func magicType(head []byte) string {
	// 0xCAFEBABE is both a fat Mach-O and a Java class: a fat binary
	// counts its architectures (few), a class file has its version there
	// (45 and up).
	if len(head) >= 8 && bytes.HasPrefix(head, []byte("\xca\xfe\xba\xbe")) {
		if binary.BigEndian.Uint32(head[4:8]) < 30 {
			return "MACH-O"
		}
		return "CLASS"
	}
	for _, m := range magics {
		if !bytes.HasPrefix(head, []byte(m.prefix)) {
			continue
		}
		if m.typ != "SCRIPT" {
			return m.typ
		}
		return shebangType(head)
	}
	return ""
}

func shebangType(head []byte) string {
	line, _, _ := bytes.Cut(head[2:], []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) == 0 {
		return "SCRIPT"
	}
	interp := path.Base(f[0])
	if interp == "env" && len(f) > 1 {
		interp = f[1]
		for _, a := range f[1:] { // env -S python3 -u
			if !strings.HasPrefix(a, "-") {
				interp = path.Base(a)
				break
			}
		}
	}
	for _, s := range shebangs {
		if strings.HasPrefix(interp, s.prefix) {
			return s.typ
		}
	}
	return "SCRIPT"
}

// textMarkers name a text file's type by what appears in its first bytes
// (lower-cased), first match wins; web-shell types before script types,
// since a page may carry script.
var textMarkers = []struct {
	marker string
	typ    string
	start  bool // only at the start of the file (after blanks)
}{
	{"<?php", "PHP", false},
	{"<%@ page", "JSP", false}, {"<%@page", "JSP", false}, {"<jsp:", "JSP", false},
	{"<%@ language", "ASP", false}, {"<%@language", "ASP", false}, {"runat=\"server\"", "ASP", false}, {"<%response.", "ASP", false}, {"<% response.", "ASP", false},
	{"@echo off", "BATCH", true}, {"@echo on", "BATCH", true},
	{"option explicit", "VBS", true}, {"wscript.", "VBS", false}, {"createobject(\"wscript", "VBS", false},
}

func textType(head []byte) string {
	if len(head) == 0 || bytes.IndexByte(head, 0) >= 0 {
		return ""
	}
	low := bytes.ToLower(head)
	trimmed := bytes.TrimLeft(low, " \t\r\n\ufeff")
	trimmed = bytes.TrimPrefix(trimmed, []byte("\xef\xbb\xbf"))
	for _, m := range textMarkers {
		if m.start && bytes.HasPrefix(trimmed, []byte(m.marker)) || !m.start && bytes.Contains(low, []byte(m.marker)) {
			return m.typ
		}
	}
	if isBase64Text(head) {
		return "Base64"
	}
	return ""
}

// isBase64Text reports whether head is one long run of base64: at least
// 64 characters of the alphabet (line breaks allowed), nothing else, and
// long lines (text of words is not base64).
func isBase64Text(head []byte) bool {
	t := bytes.TrimSpace(head)
	if len(t) < 64 {
		return false
	}
	letters, lineLen, longest := 0, 0, 0
	for _, c := range t {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=':
			letters++
			lineLen++
		case c == '\n' || c == '\r':
			longest = max(longest, lineLen)
			lineLen = 0
		default:
			return false
		}
	}
	return max(longest, lineLen) >= 60 && letters >= 64
}

// extTypes name a file the magic and content did not identify.
var extTypes = map[string]string{
	".exe": "EXE", ".dll": "EXE", ".sys": "EXE",
	".php": "PHP", ".phtml": "PHP", ".php5": "PHP", ".php7": "PHP",
	".jsp": "JSP", ".jspx": "JSP",
	".asp": "ASP", ".aspx": "ASP", ".asa": "ASP", ".ashx": "ASP", ".asmx": "ASP",
	".vbs": "VBS", ".vbe": "VBS",
	".bat": "BATCH", ".cmd": "BATCH",
	".py": "Python", ".pyw": "Python",
	".ps1": "PowerShell", ".psm1": "PowerShell", ".psd1": "PowerShell",
	".sh": "SCRIPT", ".bash": "SCRIPT", ".pl": "SCRIPT", ".rb": "SCRIPT",
	".dmp": "MDMP",
	".rtf": "RTF",
}

// Filetypes lists every value Filetype can return, for docs and tests.
func Filetypes() []string {
	set := map[string]bool{"CLASS": true, "Base64": true}
	for _, m := range magics {
		set[m.typ] = true
	}
	for _, s := range shebangs {
		set[s.typ] = true
	}
	for _, m := range textMarkers {
		set[m.typ] = true
	}
	for _, t := range extTypes {
		set[t] = true
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	return out
}
