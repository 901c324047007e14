package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestObjectMatchesSource fails when bpf/tripwire.c changed without
// `go generate ./sensor/kernel`: the digest recorded at generation must be
// the source's. With clang-14 present it also rebuilds the object and
// compares it with the committed one.
func TestObjectMatchesSource(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("bpf/tripwire.c")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("bpf/tripwire.c.sha256")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	if got := hex.EncodeToString(sum[:]); got != strings.TrimSpace(string(want)) {
		t.Fatalf("bpf/tripwire.c has sha256 %s, the committed object was built from %s: run go generate ./sensor/kernel", got, strings.TrimSpace(string(want)))
	}
	if _, err := exec.LookPath("clang-14"); err != nil {
		t.Log("clang-14 not installed: object not rebuilt")
		return
	}
	out := filepath.Join(t.TempDir(), "tripwire.o")
	cmd := exec.Command("clang-14", "-O2", "-mcpu=v1", "-g", "-Wall", "-Werror", "-I/usr/include/x86_64-linux-gnu",
		"-target", "bpfel", "-c", "bpf/tripwire.c", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang-14: %v\n%s", err, b)
	}
	// Debug info carries build paths, so compare what is loaded: every
	// program's instructions and every map's shape.
	built, err := ebpf.LoadCollectionSpec(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := loadTripwire()
	if err != nil {
		t.Fatal(err)
	}
	if len(built.Programs) != len(committed.Programs) || len(built.Maps) != len(committed.Maps) {
		t.Fatalf("rebuilt object has %d programs and %d maps, committed %d and %d: run go generate ./sensor/kernel",
			len(built.Programs), len(built.Maps), len(committed.Programs), len(committed.Maps))
	}
	for name, p := range built.Programs {
		c, ok := committed.Programs[name]
		if !ok || fmt.Sprint(p.Instructions) != fmt.Sprint(c.Instructions) {
			t.Errorf("program %s differs from the committed object: run go generate ./sensor/kernel", name)
		}
	}
	for name, m := range built.Maps {
		c, ok := committed.Maps[name]
		if !ok || m.Type != c.Type || m.KeySize != c.KeySize || m.ValueSize != c.ValueSize || m.MaxEntries != c.MaxEntries {
			t.Errorf("map %s differs from the committed object: run go generate ./sensor/kernel", name)
		}
	}
}
