// Command kernelcost (Linux: the layer is eBPF) measures what the kernel layer alone adds to a process
// storm and a file storm: the same workloads with no layer, then with the
// layer loaded (pinned under a private dir, removed after) and its process
// feed read and decoded, without the rest of the sensor.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tillwatch/tillwatch/sensor/kernel"
	"github.com/tillwatch/tillwatch/sensor/process"
)

func main() {
	execs := flag.Int("execs", 2000, "sequential execs of /bin/true")
	files := flag.Int("files", 10000, "files written, renamed and removed")
	dir := flag.String("dir", "/dev/shm", "where the files go")
	runs := flag.Int("runs", 3, "alternating runs without and with the layer")
	tainted := flag.Bool("tainted", false, "run the workloads as a tainted tree (as under an RMM agent) with the fresh-exec tripwire armed: the cost of recording every file the tree writes")
	flag.Parse()
	if err := run(*execs, *files, *dir, *runs, *tainted); err != nil {
		fmt.Fprintln(os.Stderr, "kernelcost: "+err.Error())
		os.Exit(1)
	}
}

func run(execs, files int, dir string, runs int, tainted bool) error {
	var off, on [2][]time.Duration
	for i := 0; i < runs; i++ {
		for _, with := range []bool{false, true} {
			var stop func()
			if with {
				pin := fmt.Sprintf("/sys/fs/bpf/tillwatch-kernelcost-%d", os.Getpid())
				l, err := kernel.Load(kernel.Config{PinDir: pin, FreshExec: tainted})
				if err != nil {
					return err
				}
				if tainted {
					// This process plays the agent; its /bin/true children
					// inherit the taint. Nothing it runs is fresh, so
					// nothing is stopped (and enforce is off anyway).
					if err := l.TaintAgent(os.Getpid()); err != nil {
						l.Unpin()
						return err
					}
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); l.ProcessFeed().Run(ctx, func(process.KernelEvent) {}) }()
				stop = func() { cancel(); <-done; l.Unpin() }
			}
			p, f, err := workloads(execs, files, dir)
			if stop != nil {
				stop()
			}
			if err != nil {
				return err
			}
			if with {
				on[0], on[1] = append(on[0], p), append(on[1], f)
			} else {
				off[0], off[1] = append(off[0], p), append(off[1], f)
			}
		}
	}
	for i, name := range []string{"process storm", "file storm"} {
		a, b := median(off[i]), median(on[i])
		fmt.Printf("%-13s without %v with %v ratio %.2fx (runs without %v with %v)\n", name, a.Round(time.Millisecond), b.Round(time.Millisecond), float64(b)/float64(a), off[i], on[i])
	}
	return nil
}

func workloads(execs, files int, dir string) (time.Duration, time.Duration, error) {
	t0 := time.Now()
	for range execs {
		if err := exec.Command("/bin/true").Run(); err != nil {
			return 0, 0, err
		}
	}
	p := time.Since(t0)
	d, err := os.MkdirTemp(dir, "kernelcost-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(d)
	t1 := time.Now()
	for i := range files {
		n := filepath.Join(d, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(n, []byte("some text\n"), 0o644); err != nil {
			return 0, 0, err
		}
		if err := os.Rename(n, n+".x"); err != nil {
			return 0, 0, err
		}
		if err := os.Remove(n + ".x"); err != nil {
			return 0, 0, err
		}
	}
	return p, time.Since(t1), nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
