package kernel

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// verifierObject loads another build of bpf/tripwire.c than the committed
// one, to compare a change before regenerating (`-args
// -verifier.object=/tmp/tripwire.o`, built with bpf2go's flags, gen.go).
var verifierObject = flag.String("verifier.object", "", "BenchmarkVerifier: object file to load instead of the committed one")

// verifierStats matches the verifier's summary line (LogLevelStats):
// "processed N insns (limit 1000000) max_states_per_insn M total_states T
// peak_states P mark_read R".
var verifierStats = regexp.MustCompile(`processed (\d+) insns .*total_states (\d+) peak_states (\d+)`)

// BenchmarkVerifier loads each program of the object on its own (with the
// maps it uses, not pinned) and reports what the kernel's verifier spent on
// it: instructions processed, states, and the wall time of the load, which
// is what a first start of the sensor (and each kernel test) pays for every
// program. `go test -run XXX -bench Verifier -benchtime 1x -v ./sensor/kernel/`
// lists the programs, the costliest last.
func BenchmarkVerifier(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("loading programs needs root")
	}
	spec, err := loadTripwire()
	if *verifierObject != "" {
		spec, err = ebpf.LoadCollectionSpec(*verifierObject)
	}
	if err != nil {
		b.Fatal(err)
	}
	type row struct {
		name          string
		insns, states int
		d             time.Duration
	}
	var rows []row
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				one := spec.Copy()
				for n := range one.Programs {
					if n != name {
						delete(one.Programs, n)
					}
				}
				start := time.Now()
				coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
					Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
				})
				d := time.Since(start)
				if err != nil {
					// A refused program: the end of the verifier's
					// log says why (a loop it gave up on, a call
					// chain's stack past 512 bytes).
					var ve *ebpf.VerifierError
					if errors.As(err, &ve) {
						for _, l := range ve.Log[max(0, len(ve.Log)-40):] {
							b.Log(l)
						}
					}
					b.Fatalf("loading %s: %+v", name, err)
				}
				m := verifierStats.FindStringSubmatch(coll.Programs[name].VerifierLog)
				coll.Close()
				if m == nil {
					b.Fatalf("%s: no stats in the verifier's log", name)
				}
				insns, _ := strconv.Atoi(m[1])
				states, _ := strconv.Atoi(m[2])
				b.ReportMetric(float64(insns), "insns/op")
				b.ReportMetric(float64(states), "states/op")
				rows = append(rows, row{name, insns, states, d})
			}
		})
	}
	slices.SortFunc(rows, func(a, b row) int { return a.insns - b.insns })
	var total time.Duration
	for _, r := range rows {
		b.Logf("%-22s %9d insns %7d states %6d ms", r.name, r.insns, r.states, r.d.Milliseconds())
		total += r.d
	}
	b.Logf("total load time %v", total)
}

// BenchmarkLoadFirst times what a first start of the sensor waits for until
// the tripwires are armed, the layer's part of it: Load into a pin dir of
// its own (nothing pinned, so every program is verified and attached), then
// the pins removed. `go test -run XXX -bench LoadFirst -benchtime 3x
// ./sensor/kernel/`.
func BenchmarkLoadFirst(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the kernel layer needs root")
	}
	for range b.N {
		pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("tillwatch-bench-%d", os.Getpid()))
		l, err := Load(Config{PinDir: pin})
		if err != nil {
			Release(pin)
			b.Fatal(err)
		}
		b.StopTimer()
		if err := l.Unpin(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
