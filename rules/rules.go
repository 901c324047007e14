// Package rules embeds tillwatch's built-in rule set: the files under this
// folder are data, owned by rule authors, compiled into the sensor so a till
// works with no rule files on disk. Extra folders given with --rules are
// loaded on top.
package rules

import "embed"

// Builtin is the built-in rule tree. Paths are relative to this folder,
// e.g. "exec/exec-location.yaml". Each rule folder adds its own line.
//
//go:embed exec
//go:embed rmm
//go:embed sigma
//go:embed yara/*.yar
//go:embed ransomware
var Builtin embed.FS
