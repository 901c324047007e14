//go:build cgo

package yara

import (
	"os"
	"testing"

	"github.com/tillwatch/tillwatch/rules"
)

// TestBinaryEmbeddingRulesDoesNotMatchThem: this test binary, like every
// tillwatch binary, carries the built-in rule tree (it imports
// rules.Builtin). Scanned with those very rules it must not match — or the
// sensor would flag `tillwatch alerts`, and antivirus products would flag
// tillwatch itself.
func TestBinaryEmbeddingRulesDoesNotMatchThem(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, Options{Builtin: rules.Builtin, BuiltinDir: "yara", MaxFileSize: 1 << 30})
	res, err := e.ScanFile(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Matches {
		t.Errorf("a binary embedding the built-in rules matches rule %+v", m)
	}
}
