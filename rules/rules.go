// Package rules is tillwatch's built-in rule set: the files under this
// folder are data, owned by rule authors, compiled into the sensor so a till
// works with no rule files on disk. Extra folders given with --rules are
// loaded on top.
//
// The tree travels inside the binaries as a gzip'd tar (builtin.tar.gz,
// made by `make rules`), not as plain files: every tillwatch binary would
// otherwise carry the text of our own YARA signatures and match them — and
// so would every antivirus scanning a till. A test fails when the archive
// is older than the files. Which files are built in: archive.Sources.
package rules

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"io/fs"
	"sync"

	"github.com/tillwatch/tillwatch/rules/archive"
)

//go:embed builtin.tar.gz
var packed []byte

// Builtin is the built-in rule tree. Paths are relative to this folder,
// e.g. "exec/exec-location.yaml".
var Builtin fs.FS = mustUnpack(packed)

// ArchiveSHA256 is the hex SHA-256 of the built-in rule archive exactly as
// embedded. The archive is deterministic (rules/archive), so equal digests
// mean equal built-in rule sets; sensors report it in their rules version.
func ArchiveSHA256() string { return archiveSum() }

var archiveSum = sync.OnceValue(func() string {
	sum := sha256.Sum256(packed)
	return hex.EncodeToString(sum[:])
})

func mustUnpack(raw []byte) fs.FS {
	fsys, err := archive.Unpack(raw)
	if err != nil {
		// The archive is built and tested with the binary; a broken one is
		// a build defect, not a runtime condition.
		panic("rules: built-in archive: " + err.Error())
	}
	return fsys
}
