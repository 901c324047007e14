// Package benchdoc writes a benchmark's results into its own section of
// docs/benchmarks.md, so each `make bench-*` target refreshes its figures
// without touching the others'.
package benchdoc

import (
	"fmt"
	"os"
	"strings"
)

// Publish prints section on standard output and, unless path is "",
// writes it into its section of the markdown file at path (WriteSection).
func Publish(path, heading, section string) error {
	fmt.Print(section)
	if path == "" {
		return nil
	}
	return WriteSection(path, heading, section)
}

// WriteSection replaces the section that starts with the line heading
// ("## Name") in the markdown file at path, up to the next "## " heading,
// with section (which starts with that heading); a missing section is
// appended and a missing file created.
func WriteSection(path, heading, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	if s == "" {
		s = "# Benchmarks\n"
	}
	section = strings.TrimRight(section, "\n") + "\n"
	start := strings.Index(s, "\n"+heading+"\n")
	if start < 0 {
		return os.WriteFile(path, []byte(strings.TrimRight(s, "\n")+"\n\n"+section), 0o644)
	}
	rest := s[start+1:]
	tail := ""
	if end := strings.Index(rest[len(heading)+1:], "\n## "); end >= 0 {
		tail = "\n" + rest[len(heading)+1+end+1:]
	}
	return os.WriteFile(path, []byte(s[:start+1]+section+tail), 0o644)
}
