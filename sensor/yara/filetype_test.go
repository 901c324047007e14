package yara

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// TestFiletype is the documented table (docs/rules.md): magic first, then
// content, then extension.
func TestFiletype(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("MZ\x90\x00 payload bytes ", 8)))
	tests := []struct {
		name, head, want string
	}{
		{"a.jpg", "MZ\x90\x00\x03", "EXE"},
		{"x", "\x7fELF\x02\x01", "ELF"},
		{"x", "\xcf\xfa\xed\xfe\x07\x00", "MACH-O"},
		{"x", "\xca\xfe\xba\xbe\x00\x00\x00\x02", "MACH-O"},
		{"A.class", "\xca\xfe\xba\xbe\x00\x00\x00\x34", "CLASS"},
		{"x.dmp", "MDMP\x93\xa7", "MDMP"},
		{"x.docx", "PK\x03\x04\x14\x00", "ZIP"},
		{"x", "Rar!\x1a\x07\x01\x00", "RAR"},
		{"x", "7z\xbc\xaf\x27\x1c", "7ZIP"},
		{"x", "\x1f\x8b\x08", "GZIP"},
		{"x.doc", "{\\rtf1\\ansi", "RTF"},
		{"x", "%PDF-1.7", "PDF"},
		{"x", "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"},
		{"x", "#!/bin/sh\necho", "SCRIPT"},
		{"x", "#!/usr/bin/env python3\nimport os", "Python"},
		{"x", "#!/usr/bin/python3.11 -u\n", "Python"},
		{"x", "#!/usr/bin/env -S pwsh -NoProfile\n", "PowerShell"},
		{"x", "#!/usr/bin/php\n", "PHP"},
		{"logo.jpg", "GIF89a<?php eval($_POST['x']); ?>", "GIF"},
		{"logo.jpg", "\n<?php eval($_POST['x']); ?>", "PHP"},
		{"x.txt", "<%@ page import=\"java.io.*\" %>", "JSP"},
		{"x.txt", "<%@ Language=VBScript %>", "ASP"},
		{"x.txt", "<script runat=\"server\">", "ASP"},
		{"x.txt", "@ECHO OFF\r\nset x=1", "BATCH"},
		{"x.txt", "Option Explicit\nDim a", "VBS"},
		{"x.txt", "Set o = CreateObject(\"WScript.Shell\")", "VBS"},
		{"x.txt", b64, "Base64"},
		{"x.txt", "just some words that are not base64 at all, really not", ""},
		{"run.ps1", "Get-ChildItem", "PowerShell"},
		{"tool.py", "import os", "Python"},
		{"go.bat", "set x=1", "BATCH"},
		{"a.PHP", "", "PHP"},
		{"page.aspx", "hello", "ASP"},
		{"x.bin", "\x00\x01\x02", ""},
	}
	for _, tc := range tests {
		if got := Filetype([]byte(tc.head), tc.name); got != tc.want {
			t.Errorf("Filetype(%q, %q) = %q, want %q", tc.head, tc.name, got, tc.want)
		}
	}
	// The types signature-base tests are all computed.
	for _, want := range []string{"EXE", "ELF", "PHP", "JSP", "ASP", "VBS", "BATCH", "Python", "RTF", "MDMP", "MACH-O", "PowerShell", "Base64", "SCRIPT", "ZIP"} {
		if !slices.Contains(Filetypes(), want) {
			t.Errorf("Filetypes() lacks %s", want)
		}
	}
}

func FuzzFiletype(f *testing.F) {
	f.Add([]byte("#!/usr/bin/env -S python3"), "x")
	f.Add([]byte("<?php"), "a.jpg")
	f.Add([]byte("\xca\xfe\xba\xbe\x00"), "")
	f.Fuzz(func(t *testing.T, head []byte, name string) {
		_ = Filetype(head, name)
	})
}

func TestRootsIndexFiles(t *testing.T) {
	t.Parallel()
	src := func(p, text string) Source { return Source{Name: p, Path: p, Text: []byte(text)} }
	srcs := []Source{
		src("index.yar", "/* c */\ninclude \"./a/x.yar\"\ninclude \"./a/y.yar\"\n"),
		src("a_index.yar", "include \"./a/x.yar\"\n"),
		src("a/x.yar", "rule x { condition: true }"),
		src("a/y.yar", "include \"z.yar\"\nrule y { condition: z }"),
		src("a/z.yar", "rule z { condition: true }"),
		src("old/w.yar", "rule x { condition: false }"),
	}
	var got []string
	for _, s := range roots(srcs) {
		got = append(got, s.Path)
	}
	if want := []string{"a/x.yar", "a/y.yar"}; !slices.Equal(got, want) {
		t.Errorf("roots with index.yar = %v, want %v", got, want)
	}
	// No index: every file not included by another.
	got = nil
	for _, s := range roots(srcs[2:]) {
		got = append(got, s.Path)
	}
	if want := []string{"a/x.yar", "a/y.yar", "old/w.yar"}; !slices.Equal(got, want) {
		t.Errorf("roots without index = %v, want %v", got, want)
	}
	// An index in a subfolder governs only that subfolder.
	got = nil
	sub := []Source{src("set/a_index.yar", "include \"./x.yar\"\n"), src("set/x.yar", "rule x {condition: true}"),
		src("set/unlisted.yar", "rule x {condition: false}"), src("other/o.yar", "rule o {condition: true}")}
	for _, s := range roots(sub) {
		got = append(got, s.Path)
	}
	if want := []string{"set/x.yar", "other/o.yar"}; !slices.Equal(got, want) {
		t.Errorf("roots with a subfolder index = %v, want %v", got, want)
	}
}
