package rmm

import (
	"path/filepath"
	"strings"

	"github.com/tillwatch/tillwatch/internal/event"
)

func argsAfter0(p *event.Process) []string {
	if len(p.Args) > 1 {
		return p.Args[1:]
	}
	if len(p.Args) == 0 && p.CommandLine != "" {
		f := strings.Fields(p.CommandLine)
		if len(f) > 1 {
			return f[1:]
		}
	}
	return nil
}

// fileArgs are the arguments that are not options.
func fileArgs(p *event.Process) []string {
	var out []string
	for _, a := range argsAfter0(p) {
		if a != "" && !strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "+") && !isMode(a) {
			out = append(out, a)
		}
	}
	return out
}

func isMode(a string) bool {
	if len(a) < 3 || len(a) > 4 {
		return strings.ContainsAny(a, "+=") && !strings.Contains(a, "/")
	}
	for _, c := range a {
		if c < '0' || c > '7' {
			return false
		}
	}
	return true
}

func resolve(cwd, p string) string {
	if filepath.IsAbs(p) || cwd == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(cwd, p)
}

var interpreters = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "busybox": true,
	"python": true, "python2": true, "python3": true, "perl": true, "ruby": true}

// ran returns what an exec ran: the executable and, for a script (the
// kernel runs the interpreter with the script as argv[1]), the script.
func ran(p *event.Process) []string {
	var out []string
	if p.Executable != "" {
		out = append(out, p.Executable)
	}
	if a := argsAfter0(p); len(a) > 0 && !strings.HasPrefix(a[0], "-") && interpreters[normName(baseName(p.Executable, p.Name))] {
		out = append(out, resolve(p.WorkingDirectory, a[0]))
	}
	return out
}

func baseName(exe, name string) string {
	if exe != "" {
		return filepath.Base(exe)
	}
	return name
}

func isIn(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
