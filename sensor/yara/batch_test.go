//go:build cgo

package yara

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestSweepBatchMatchesFileByFile: the batched sweep reports exactly what
// scanning each file on its own reports, externals included (a rule on
// filename, one on filetype), for more files than a batch holds.
func TestSweepBatchMatchesFileByFile(t *testing.T) {
	t.Parallel()
	r, err := Compile([]Source{{Name: "t.yar", Text: []byte(`
rule Batch_Marker { strings: $a = "batch-marker" condition: $a }
rule Batch_Name { condition: filename == "named.txt" }
rule Batch_ELF { condition: filetype == "ELF" }
rule Batch_Owner { condition: owner != "" and filepath != "" and extension == ".bin" }
`)}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3*batchFiles + 5 {
		body := "nothing here"
		if i%7 == 0 {
			body = "a batch-marker b"
		}
		write(fmt.Sprintf("f%03d.txt", i), body)
	}
	write("named.txt", "x")
	write("elf.bin", "\x7fELF\x02\x01\x01")
	write("empty.txt", "")

	var mu sync.Mutex
	var got []string
	st, err := SweepRules(context.Background(), r, []string{dir}, SweepOptions{Threads: 2}, func(res Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s: %v", res.Path, err)
		}
		for _, m := range res.Matches {
			got = append(got, filepath.Base(res.Path)+" "+m.Rule)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	var own owners
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		ms, err := r.ScanMem(b, FileExternals(p, b[:min(len(b), HeadSize)], own.name(fi)), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			want = append(want, e.Name()+" "+m.Rule)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("batched sweep:\n%s\nfile by file:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, w := range []string{"named.txt Batch_Name", "elf.bin Batch_ELF", "elf.bin Batch_Owner", "f000.txt Batch_Marker"} {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q in %v", w, got)
		}
	}
	if st.Files != int64(len(ents)) || st.Errors != 0 {
		t.Errorf("stats %+v, want %d files", st, len(ents))
	}
}

// TestSweepBatchOverflow: a file with more matches than a batch holds is
// scanned again on its own and loses none.
func TestSweepBatchOverflow(t *testing.T) {
	t.Parallel()
	var src strings.Builder
	n := batchMatchCap + 10
	for i := range n {
		fmt.Fprintf(&src, "rule R%d { condition: true }\n", i)
	}
	r, err := Compile([]Source{{Name: "many.yar", Text: []byte(src.String())}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	counts := map[string]int{}
	if _, err := SweepRules(context.Background(), r, []string{dir}, SweepOptions{Threads: 1}, func(res Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s: %v", res.Path, err)
		}
		counts[filepath.Base(res.Path)] = len(res.Matches)
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if c := counts[fmt.Sprint(i)]; c != n {
			t.Errorf("file %d: %d matches, want %d", i, c, n)
		}
	}
}
