package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// The fresh-exec judgement. The kernel stops, at exec, a process under an
// RMM agent whose file's basename a process of such a tree wrote, renamed
// into place or made executable within FreshWindow; it cannot tell a
// payload from an installer. The sensor gathers the facts (FreshFacts) and
// JudgeFresh, the only place the rules live, decides: kill the tree, or let
// it go (SIGCONT) and forget the file.

// FreshFacts is what the sensor established about a process the fresh-exec
// tripwire stopped.
type FreshFacts struct {
	// Confirmed says the file the process is running has the basename the
	// kernel matched and was changed (ctime) at or after the tainted
	// tree's write: the stop is about that file, not a namesake.
	Confirmed bool
	// Path is the file, as seen by the stopped process ("" if not found).
	Path string
	// WriterExe and WriterArgs describe the process that wrote the file,
	// as the process table knows it (its image after the write: a shell
	// that opened "> p" and then exec'd base64 is base64); empty when
	// unknown. WriterComm is its name at the write, from the kernel.
	WriterExe  string
	WriterArgs []string
	WriterComm string
	// ByAgent says the agent itself (not a process it started) wrote it.
	ByAgent bool
	// CopyOf is the system tool the writer's executable is a byte-for-byte
	// copy of ("" if none or not known).
	CopyOf string
	// FileCopyOf is the system tool the file run is a copy of: a decoder,
	// downloader or interpreter about to run under another name.
	FileCopyOf string
	// YARA lists the rules the file matched.
	YARA []string
	// Approved says the tree belongs to an approved RMM agent.
	Approved bool
}

// Verdict is the judgement of a stopped process.
type Verdict struct {
	Kill bool
	// Why says which rule decided, in words for the alert.
	Why string
}

// Decoders are programs that turn text into a binary, with the arguments
// that make them decode (nil: any use decodes). A decoder's output run
// under an RMM agent is the Kaseya chain.
var decoders = map[string][]string{
	"base64": {"-d", "--decode", "-D"}, "base32": {"-d", "--decode"}, "basenc": {"-d", "--decode"},
	"openssl": {"-d"}, "xxd": {"-r", "-revert"}, "uudecode": nil, "certutil": {"-decode", "-decodehex"},
	"certutil.exe": {"-decode", "-decodehex"},
}

// Interpreters decode when their code says so.
var decodingInterpreters = []string{"python", "python2", "python3", "perl", "ruby", "php", "node"}
var decodeWords = []string{"b64decode", "decodebytes", "unhexlify", "decode_base64", "base64_decode", "unpack", "fromhex", "atob", "Buffer.from"}

// Downloaders are how an approved agent's deployment fetches an installer.
var downloaders = []string{"curl", "wget", "fetch", "aria2c"}

// JudgeFresh decides what becomes of a process the fresh-exec tripwire
// stopped. The rules, in order:
//  1. not confirmed (the running file is not the one the tree wrote): let go;
//  2. the file matches a YARA rule: kill;
//  3. the writer decoded it (base64 -d, openssl ... -d, xxd -r, uudecode,
//     certutil -decode, an interpreter calling a decoding function): kill;
//  4. the writer is a copy of a system tool running under another name, or
//     the file run is such a copy (certutil.exe copied to cert.exe): kill;
//  5. the tree is not under an approved RMM agent: kill;
//  6. the agent itself or a downloader (curl, wget) under it wrote the file:
//     let go, the routine deployment;
//  7. anything else under an approved agent: let go, reported.
func JudgeFresh(f FreshFacts) Verdict {
	if !f.Confirmed {
		return Verdict{Why: "the running file is not the one the RMM tree wrote (a namesake): let go"}
	}
	if len(f.YARA) > 0 {
		return Verdict{Kill: true, Why: "the file matches YARA " + strings.Join(f.YARA, ", ")}
	}
	tool := writerTool(f)
	if how := decodes(tool, f.WriterArgs); how != "" {
		return Verdict{Kill: true, Why: "the file was decoded by " + how}
	}
	if f.CopyOf != "" && filepath.Base(f.WriterExe) != filepath.Base(f.CopyOf) {
		return Verdict{Kill: true, Why: fmt.Sprintf("the file was written by a copy of %s running as %s", f.CopyOf, filepath.Base(f.WriterExe))}
	}
	if f.FileCopyOf != "" && filepath.Base(f.Path) != filepath.Base(f.FileCopyOf) {
		return Verdict{Kill: true, Why: fmt.Sprintf("the file is a copy of %s under another name", f.FileCopyOf)}
	}
	if !f.Approved {
		return Verdict{Kill: true, Why: "a file written under an RMM agent that is not approved was run"}
	}
	if f.ByAgent {
		return Verdict{Why: "written by the approved agent itself: a deployment"}
	}
	if slices.Contains(downloaders, tool) {
		return Verdict{Why: "downloaded by " + tool + " under the approved agent: a deployment"}
	}
	return Verdict{Why: "written by " + orUnknown(tool) + " under the approved agent; neither decoded nor known bad: let go"}
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown process"
	}
	return s
}

// writerTool is the program the writer is: the system tool its executable
// is a copy of, else its executable's name, else its name at the write.
func writerTool(f FreshFacts) string {
	switch {
	case f.CopyOf != "":
		return filepath.Base(f.CopyOf)
	case f.WriterExe != "":
		return filepath.Base(f.WriterExe)
	case len(f.WriterArgs) > 0:
		return filepath.Base(f.WriterArgs[0])
	}
	return f.WriterComm
}

// decodes says how tool with args decodes ("base64 -d"), or "".
func decodes(tool string, args []string) string {
	var rest []string
	if len(args) > 1 {
		rest = args[1:]
	}
	if flags, ok := decoders[tool]; ok {
		if flags == nil {
			return tool
		}
		for _, a := range rest {
			if slices.Contains(flags, a) {
				return tool + " " + a
			}
		}
		// openssl's decoding is "enc -d" or "base64 -d"; -d alone above.
		return ""
	}
	name := strings.TrimRightFunc(tool, func(r rune) bool { return r == '.' || (r >= '0' && r <= '9') })
	if slices.Contains(decodingInterpreters, name) || slices.Contains(decodingInterpreters, tool) {
		code := strings.Join(rest, " ")
		for _, w := range decodeWords {
			if strings.Contains(code, w) {
				return tool + " (" + w + ")"
			}
		}
	}
	return ""
}

// toolIndex recognises copies of system decoders and downloaders by
// content: a rename does not change the bytes (certutil.exe copied to
// cert.exe in the Kaseya chain).
type toolIndex struct {
	once  sync.Once
	dirs  []string
	bySum map[string]string
}

var systemDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"}

// maxHash bounds what is read to fingerprint an executable.
const maxHash = 64 << 20

func (ix *toolIndex) build() {
	ix.bySum = map[string]string{}
	names := slices.Concat(slices.Collect(mapKeys(decoders)), decodingInterpreters, downloaders)
	for _, dir := range ix.dirs {
		for _, n := range names {
			p := filepath.Join(dir, n)
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue
			}
			if sum, err := hashFile(real); err == nil {
				if _, ok := ix.bySum[sum]; !ok {
					ix.bySum[sum] = p
				}
			}
		}
	}
}

// copyOf returns the system tool the file at path is a copy of, or "".
func (ix *toolIndex) copyOf(path string) string {
	ix.once.Do(ix.build)
	sum, err := hashFile(path)
	if err != nil {
		return ""
	}
	return ix.bySum[sum]
}

func mapKeys(m map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", p)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, maxHash)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
