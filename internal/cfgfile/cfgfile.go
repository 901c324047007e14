// Package cfgfile loads YAML configuration strictly (an unknown key is an
// error, so a typo cannot silently fall back to a default) and carries the
// exit-code convention every tillwatch binary shares.
package cfgfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxSize bounds a config file; anything larger is not a config file.
const MaxSize = 1 << 20

// Load decodes the YAML file at path into dst, which should already hold the
// defaults. Unknown keys, type mismatches and trailing documents are errors
// that name the file and line.
func Load(path string, dst any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(raw) > MaxSize {
		return fmt.Errorf("config %s: larger than %d bytes", path, MaxSize)
	}
	return Decode(path, raw, dst)
}

// Decode is Load for bytes already read; name is used in errors.
func Decode(name string, raw []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file means "all defaults"
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nameKeys(name, raw, te)
		}
		return fmt.Errorf("config %s: %w", name, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: more than one YAML document", name)
	}
	return nil
}

// Exit codes shared by every binary (docs/reference.md "Exit codes").
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
)

// UsageError marks an error as a usage or configuration problem: the binary
// prints it on one line and exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usage wraps err as a UsageError (nil stays nil).
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &UsageError{Err: err}
}

// Usagef formats a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitRuntime
}

// unknownField matches yaml.v3's strict-mode message, which names a Go type
// the operator has never heard of.
var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type .*$`)

// nameKeys rewrites yaml.v3's type errors, which name only a line, so that
// each names its dotted key: "collector.url (line 3): unknown key".
func nameKeys(name string, raw []byte, te *yaml.TypeError) error {
	keys := map[int]string{}
	var root yaml.Node
	if yaml.Unmarshal(raw, &root) == nil {
		walkKeys(&root, "", keys)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if sub := unknownField.FindStringSubmatch(m); sub != nil {
			key := sub[2]
			if k, ok := keyAtLine(&root, sub[1]); ok {
				key = k
			}
			msgs = append(msgs, fmt.Sprintf("%s (line %s): unknown key (a typo? see the documented keys)", key, sub[1]))
			continue
		}
		var line int
		if _, err := fmt.Sscanf(m, "line %d:", &line); err == nil && keys[line] != "" {
			_, rest, _ := strings.Cut(m, ": ")
			m = fmt.Sprintf("%s (line %d): %s", keys[line], line, rest)
		}
		msgs = append(msgs, m)
	}
	return fmt.Errorf("config %s: %s", name, strings.Join(msgs, "; "))
}

// keyAtLine returns the dotted path of the mapping key written on line.
func keyAtLine(root *yaml.Node, line string) (string, bool) {
	var found string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				full := k.Value
				if prefix != "" {
					full = prefix + "." + k.Value
				}
				if fmt.Sprint(k.Line) == line && found == "" {
					found = full
				}
				walk(n.Content[i+1], full)
			}
		}
	}
	walk(root, "")
	return found, found != ""
}

// walkKeys records the dotted key of every mapping value by its line.
func walkKeys(n *yaml.Node, prefix string, keys map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			walkKeys(c, prefix, keys)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			full := k.Value
			if prefix != "" {
				full = prefix + "." + k.Value
			}
			keys[v.Line] = full
			walkKeys(v, full, keys)
		}
	}
}

// OneLine folds a multi-line error (errors.Join, yaml) into one line, the
// form every binary prints before exiting.
func OneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.ReplaceAll(strings.Join(parts, "; "), ":; ", ": ")
}
