//go:build cgo && linux

package yara

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/rules"
)

func rssAnonKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssAnon in /proc/self/status")
	return 0
}

// TestCompiledRulesDoNotKeepTheCompilerArena: rules straight from libyara's
// compiler kept about 9 MB of touched memory per compiled set, whatever its
// size — a quarter of an idle sensor. Compile keeps only what the rules
// need. Not parallel: it reads this process's resident memory.
// `go test -run TestCompiledRulesDoNotKeepTheCompilerArena -v ./sensor/yara/`
// prints the figure.
func TestCompiledRulesDoNotKeepTheCompilerArena(t *testing.T) {
	srcs, err := LoadFS(rules.Builtin, "yara", "builtin", "builtin")
	if err != nil {
		t.Fatal(err)
	}
	const sets = 5
	before := rssAnonKB(t)
	var keep []*Rules
	for range sets {
		r, err := Compile(srcs)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, r)
	}
	per := (rssAnonKB(t) - before) / sets
	t.Logf("resident memory per compiled built-in rule set: %d kB (%d rules)", per, keep[0].Len())
	if per > 5<<10 {
		t.Errorf("each compiled rule set keeps %d kB resident, want under 5 MB (the compiler's arena is kept)", per)
	}
}
