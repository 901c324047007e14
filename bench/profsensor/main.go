//go:build linux

// Command profsensor is `tillwatch-sensor run` standalone (no collector)
// with Go's profilers attached, for the benchmarks' -profile flag
// (bench/footprintbench, bench/loadbench): the same agent.New and
// Run as cmd/tillwatch-sensor on the default configuration, with the
// handful of flags the benchmarks pass. It writes a CPU profile of the
// whole run to -cpuprofile and, on SIGTERM or SIGINT (before the sensor
// shuts down), a heap profile to -memprofile. Read them with
// `go tool pprof -top FILE`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/internal/logging"
	"github.com/tillwatch/tillwatch/sensor/agent"
	"github.com/tillwatch/tillwatch/sensor/config"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	cfg := config.Default()
	cfg.Collector.Disabled = true
	var watch multi
	flag.Var(&watch, "watch", "directory to watch (repeatable)")
	flag.Bool("no-collector", true, "always standalone (accepted for the benchmarks' command lines)")
	flag.StringVar(&cfg.Mode, "mode", cfg.Mode, "monitor or enforce")
	flag.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "state directory")
	flag.StringVar(&cfg.SpoolDir, "spool", cfg.SpoolDir, "spool directory")
	flag.StringVar(&cfg.Metrics.Listen, "metrics-listen", cfg.Metrics.Listen, "metrics address (\"\" disables)")
	flag.StringVar(&cfg.Process.Backend, "process-backend", cfg.Process.Backend, "auto, netlink or poll")
	flag.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "log level")
	cpu := flag.String("cpuprofile", "", "write a CPU profile of the run to FILE")
	mem := flag.String("memprofile", "", "write a heap profile to FILE when asked to stop")
	file := flag.String("c", "", "YAML config file: its kernel section and files.open_permission are used (the benchmarks pin the layer in a folder of their own)")
	// The benchmarks' command lines start with the run subcommand.
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	if err := flag.CommandLine.Parse(args); err != nil {
		os.Exit(2)
	}
	cfg.Watch = watch
	if *file != "" {
		fc, err := config.Load(*file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "profsensor: "+err.Error())
			os.Exit(2)
		}
		cfg.Kernel = fc.Kernel
		cfg.Files.OpenPermission = fc.Files.OpenPermission
	}
	if err := run(cfg, *cpu, *mem); err != nil {
		fmt.Fprintln(os.Stderr, "profsensor: "+err.Error())
		os.Exit(1)
	}
}

func run(cfg config.Config, cpu, mem string) error {
	log, err := logging.New(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	s, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	if cpu != "" {
		stop, err := benchproc.StartCPUProfile(cpu)
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		// The heap as the running sensor holds it, before shutdown frees it.
		if mem != "" {
			if f, err := os.Create(mem); err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		cancel()
	}()
	return s.Run(ctx)
}
