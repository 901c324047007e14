package kernel

import (
	"strings"
	"testing"
)

func TestJudgeFresh(t *testing.T) {
	t.Parallel()
	ok := func(f FreshFacts) FreshFacts { f.Confirmed, f.Path = true, "/tmp/x/upd"; return f }
	cases := []struct {
		name string
		f    FreshFacts
		kill bool
		why  string
	}{
		{"namesake", FreshFacts{WriterExe: "/usr/bin/base64", WriterArgs: []string{"base64", "-d"}}, false, "namesake"},
		{"yara", ok(FreshFacts{YARA: []string{"Ransom_X"}, Approved: true, ByAgent: true}), true, "YARA Ransom_X"},
		{"base64 -d", ok(FreshFacts{WriterExe: "/usr/bin/base64", WriterArgs: []string{"base64", "-d"}, Approved: true}), true, "base64 -d"},
		{"base64 --decode", ok(FreshFacts{WriterExe: "/usr/bin/base64", WriterArgs: []string{"base64", "--decode", "in"}, Approved: true}), true, "base64 --decode"},
		{"base64 encoding", ok(FreshFacts{WriterExe: "/usr/bin/base64", WriterArgs: []string{"base64", "in"}, Approved: true}), false, "under the approved agent"},
		{"openssl enc -d", ok(FreshFacts{WriterExe: "/usr/bin/openssl", WriterArgs: []string{"openssl", "enc", "-d", "-aes-256-cbc"}, Approved: true}), true, "openssl -d"},
		{"xxd -r", ok(FreshFacts{WriterExe: "/usr/bin/xxd", WriterArgs: []string{"xxd", "-r", "-p"}, Approved: true}), true, "xxd -r"},
		{"uudecode", ok(FreshFacts{WriterExe: "/usr/bin/uudecode", WriterArgs: []string{"uudecode"}, Approved: true}), true, "uudecode"},
		{"python b64decode", ok(FreshFacts{WriterExe: "/usr/bin/python3.11", WriterArgs: []string{"python3", "-c", "import base64,sys; sys.stdout.buffer.write(base64.b64decode(sys.stdin.read()))"}, Approved: true}), true, "b64decode"},
		{"perl decode_base64", ok(FreshFacts{WriterExe: "/usr/bin/perl", WriterArgs: []string{"perl", "-MMIME::Base64", "-e", "print decode_base64(<>)"}, Approved: true}), true, "decode_base64"},
		{"renamed decoder", ok(FreshFacts{WriterExe: "/tmp/cert", WriterArgs: []string{"/tmp/cert", "-d"}, CopyOf: "/usr/bin/base64", Approved: true}), true, "base64 -d"},
		{"renamed tool not decoding", ok(FreshFacts{WriterExe: "/tmp/dl", WriterArgs: []string{"/tmp/dl", "-o", "x"}, CopyOf: "/usr/bin/curl", Approved: true}), true, "copy of /usr/bin/curl running as dl"},
		{"file is a renamed tool", ok(FreshFacts{WriterExe: "/usr/bin/cp", FileCopyOf: "/usr/bin/base64", Approved: true}), true, "under another name"},
		{"unapproved", ok(FreshFacts{WriterExe: "/usr/bin/curl", WriterArgs: []string{"curl", "-o", "x"}}), true, "not approved"},
		{"curl deployment", ok(FreshFacts{WriterExe: "/usr/bin/curl", WriterArgs: []string{"curl", "-o", "x", "https://a"}, Approved: true}), false, "downloaded by curl"},
		{"wget deployment", ok(FreshFacts{WriterExe: "/usr/bin/wget", WriterArgs: []string{"wget", "https://a"}, Approved: true}), false, "downloaded by wget"},
		{"agent wrote it", ok(FreshFacts{WriterExe: "/opt/agent/agent", ByAgent: true, Approved: true}), false, "approved agent itself"},
		{"other writer", ok(FreshFacts{WriterComm: "sh", Approved: true}), false, "written by sh"},
		{"unknown writer", ok(FreshFacts{Approved: true}), false, "an unknown process"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := JudgeFresh(c.f)
			if v.Kill != c.kill || !strings.Contains(v.Why, c.why) {
				t.Errorf("JudgeFresh = %+v, want kill %v and %q", v, c.kill, c.why)
			}
		})
	}
}

func TestShellExitCode(t *testing.T) {
	t.Parallel()
	for status, want := range map[uint32]int{0: 0, 3 << 8: 3, 255 << 8: 255, 9: 137, 15: 143, 0x80 | 11: 139} {
		if got := ShellExitCode(status); got != want {
			t.Errorf("ShellExitCode(%#x) = %d, want %d", status, got, want)
		}
	}
}
