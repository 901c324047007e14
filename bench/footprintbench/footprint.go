//go:build linux

package main

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// Options configure one footprint measurement.
type Options struct {
	Sensor   string        // the tillwatch-sensor binary
	Window   time.Duration // how long the idle sensor is sampled
	Warmup   time.Duration // from ready to the first sample
	Interval time.Duration // between samples
	Files    int           // small files of mixed types in the watched folder
	ProcRoot string        // "/proc"
	// SensorArgs are extra arguments for the sensor (profiling).
	SensorArgs []string
	// Env is added to the sensor's environment (a comparison run).
	Env []string
}

// Result is what the sensor used while idle.
type Result struct {
	benchproc.Summary
	Files, Dirs int
	Bytes       int64
	Ready       time.Duration // start to process source running and every folder marked
	Backend     string        // the process source's backend
	FileBackend string        // fanotify or fsnotify
	HWM         int64         // VmHWM at the end: the peak resident set since start
	HostForks   uint64        // processes created on the machine during the window
	LoadAvg     string        // at the end of the window
	Alerts      int           // alert lines in the sensor's log during the window (other work on the machine)
	Args        []string      // the sensor's command line after the binary
	Env         []string      // added to the sensor's environment
	// Resident bytes at the end of the window by mapping (/proc/PID/smaps):
	// the kernel layer's ring buffers mapped into the sensor, and the
	// sensor's own binary (file pages: code and read-only data).
	RingRSS, BinaryRSS int64
	// TrimBefore and TrimAfter are VmRSS around the sensor's start-up trim
	// (its "start-up memory given back" log line); 0 when it was not
	// logged before the window (an older sensor, or too short a warm-up).
	TrimBefore, TrimAfter int64
}

// Measure starts the sensor on a fresh state directory watching a folder
// of o.Files small files, waits until it is ready and warm, and samples it
// over o.Window.
func Measure(ctx context.Context, o Options) (Result, error) {
	var r Result
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if os.Geteuid() != 0 {
		return r, errors.New("needs root: the sensor's process connector and fanotify")
	}
	tmp, err := os.MkdirTemp("", "footprintbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	watch := filepath.Join(tmp, "shop")
	if r.Files, r.Dirs, r.Bytes, err = makeFiles(watch, o.Files); err != nil {
		return r, fmt.Errorf("files: %w", err)
	}
	// Monitor mode: on a shared machine an enforce-mode sensor would act on
	// other people's processes; while idle nothing is responded to, so the
	// footprint is that of the default enforce mode.
	r.Args = []string{"run", "--no-collector", "--mode", "monitor", "--metrics-listen", "",
		"--state-dir", filepath.Join(tmp, "state"), "--spool", filepath.Join(tmp, "spool"), "--watch", watch}
	// The kernel layer on, as by default, but pinned in a folder of the
	// benchmark's own and released after the run: another sensor on this
	// machine may hold the default pins.
	kcfg := filepath.Join(tmp, "kernel.yaml")
	pinDir := fmt.Sprintf("/sys/fs/bpf/tillwatch-footprint-%d", os.Getpid())
	if err := os.WriteFile(kcfg, []byte("kernel:\n  pin_dir: "+pinDir+"\n"), 0o600); err != nil {
		return r, err
	}
	defer os.RemoveAll(pinDir)
	r.Args = append(r.Args, "-c", kcfg)
	r.Args = append(r.Args, o.SensorArgs...)
	start := time.Now()
	r.Env = o.Env
	p, err := benchproc.StartEnv(o.Sensor, r.Args, filepath.Join(tmp, "sensor.log"), o.Env)
	if err != nil {
		return r, err
	}
	defer p.Stop(20 * time.Second)
	if err := p.WaitLog("process source running", 30*time.Second); err != nil {
		return r, err
	}
	if err := p.WaitUntil(30*time.Second, "fanotify marks on every watched folder", func() bool {
		if strings.Contains(p.Log(), "backend fallback") {
			return true
		}
		return benchproc.FanotifyReady(o.ProcRoot, p.Pid(), r.Dirs)
	}); err != nil {
		return r, err
	}
	r.Ready = time.Since(start)
	r.FileBackend = "fanotify"
	if strings.Contains(p.Log(), "backend fallback") {
		r.FileBackend = "fsnotify"
	}
	r.Backend = benchproc.LogField(p.Log(), "process source running", "backend")

	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.Warmup):
	}
	forks0, err := benchproc.HostForks(o.ProcRoot)
	if err != nil {
		return r, err
	}
	logAt := len(p.Log())
	r.TrimBefore, _ = strconv.ParseInt(benchproc.LogField(p.Log(), "start-up memory given back", "rss_before"), 10, 64)
	r.TrimAfter, _ = strconv.ParseInt(benchproc.LogField(p.Log(), "start-up memory given back", "rss_after"), 10, 64)
	wctx, cancel := context.WithTimeout(ctx, o.Window)
	defer cancel()
	ss := benchproc.Watch(wctx, o.ProcRoot, p.Pid(), o.Interval)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if p.Exited() {
		return r, fmt.Errorf("the sensor exited during the window; its log:\n%s", p.Log())
	}
	forks1, err := benchproc.HostForks(o.ProcRoot)
	if err != nil {
		return r, err
	}
	r.HostForks = forks1 - forks0
	r.LoadAvg = benchproc.LoadAvg(o.ProcRoot)
	r.Alerts = strings.Count(p.Log()[logAt:], "msg=alert ")
	r.HWM = hwm(o.ProcRoot, p.Pid())
	r.RingRSS, r.BinaryRSS = smapsRSS(o.ProcRoot, p.Pid(), o.Sensor)
	r.Summary = benchproc.Summarize(ss)
	if r.Samples < 2 {
		return r, fmt.Errorf("only %d samples of the sensor", r.Samples)
	}
	return r, nil
}

// smapsRSS sums the Rss of pid's mappings of BPF maps (the kernel layer's
// rings) and of the file bin, in bytes.
func smapsRSS(root string, pid int, bin string) (ring, binary int64) {
	b, err := os.ReadFile(filepath.Join(root, fmt.Sprint(pid), "smaps"))
	if err != nil {
		return 0, 0
	}
	var name string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			name = ""
			if len(f) >= 6 {
				name = f[5]
			}
			continue
		}
		if len(f) == 3 && f[0] == "Rss:" {
			var n int64
			fmt.Sscanf(f[1], "%d", &n)
			switch {
			case name == "anon_inode:bpf-map":
				ring += n * 1024
			case name == bin:
				binary += n * 1024
			}
		}
	}
	return ring, binary
}

// hwm is VmHWM of pid in bytes (0 if unreadable).
func hwm(root string, pid int) int64 {
	b, err := os.ReadFile(filepath.Join(root, fmt.Sprint(pid), "status"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var n int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &n)
			return n * 1024
		}
	}
	return 0
}

// makeFiles writes n small files of a shop's mixed types (text, CSV, JSON,
// logs, PNG, JPEG, PDF, DOCX, gzip, shell scripts; 200 B to 8 KiB) into ten
// folders below dir, from a fixed seed.
func makeFiles(dir string, n int) (files, dirs int, size int64, err error) {
	rng := rand.New(rand.NewPCG(9, 9))
	folders := []string{"Invoices", "Invoices/2024", "Receipts", "Stock", "Reports", "Scans", "Scripts", "Logs", "Exports", "Backups"}
	for _, f := range append([]string{""}, folders...) {
		if err := os.MkdirAll(filepath.Join(dir, f), 0o755); err != nil {
			return 0, 0, 0, err
		}
	}
	dirs = len(folders) + 1
	for i := range n {
		kind := kinds[i%len(kinds)]
		body, err := kind.make(rng, 200+rng.IntN(8<<10-200))
		if err != nil {
			return 0, 0, 0, err
		}
		name := filepath.Join(dir, folders[i%len(folders)], fmt.Sprintf("%s-%04d.%s", kind.stem, i, kind.ext))
		mode := os.FileMode(0o644)
		if kind.ext == "sh" {
			mode = 0o755
		}
		if err := os.WriteFile(name, body, mode); err != nil {
			return 0, 0, 0, err
		}
		files++
		size += int64(len(body))
	}
	return files, dirs, size, nil
}

type kind struct {
	stem, ext string
	make      func(rng *rand.Rand, size int) ([]byte, error)
}

var words = strings.Fields("till receipt total cash card refund stock item price shop sale coffee milk bread tax net gross supplier order")

func text(rng *rand.Rand, size int) []byte {
	var b bytes.Buffer
	for b.Len() < size {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()
}

func withHeader(h []byte) func(*rand.Rand, int) ([]byte, error) {
	return func(rng *rand.Rand, size int) ([]byte, error) {
		b := append([]byte{}, h...)
		for len(b) < size {
			b = append(b, byte(rng.Uint32()))
		}
		return b, nil
	}
}

var kinds = []kind{
	{"notes", "txt", func(rng *rand.Rand, size int) ([]byte, error) { return text(rng, size), nil }},
	{"sales", "csv", func(rng *rand.Rand, size int) ([]byte, error) {
		var b bytes.Buffer
		b.WriteString("date,till,item,qty,price\n")
		for b.Len() < size {
			fmt.Fprintf(&b, "2024-%02d-%02d,%d,%s,%d,%d.%02d\n", 1+rng.IntN(12), 1+rng.IntN(28), 1+rng.IntN(4), words[rng.IntN(len(words))], 1+rng.IntN(9), rng.IntN(50), rng.IntN(100))
		}
		return b.Bytes(), nil
	}},
	{"order", "json", func(rng *rand.Rand, size int) ([]byte, error) {
		var b bytes.Buffer
		b.WriteString(`{"lines":[`)
		for b.Len() < size {
			fmt.Fprintf(&b, `{"sku":%d,"name":%q,"qty":%d},`, rng.IntN(99999), words[rng.IntN(len(words))], 1+rng.IntN(9))
		}
		b.WriteString(`{}]}`)
		return b.Bytes(), nil
	}},
	{"pos", "log", func(rng *rand.Rand, size int) ([]byte, error) {
		var b bytes.Buffer
		for b.Len() < size {
			fmt.Fprintf(&b, "2024-05-%02dT%02d:%02d:00Z till%d INFO %s\n", 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), 1+rng.IntN(4), text(rng, 40))
		}
		return b.Bytes(), nil
	}},
	{"logo", "png", withHeader([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))},
	{"scan", "jpg", withHeader([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"))},
	{"invoice", "pdf", func(rng *rand.Rand, size int) ([]byte, error) {
		return []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% " + string(text(rng, size)) + "\ntrailer << /Root 1 0 R >>\n%%EOF\n"), nil
	}},
	{"letter", "docx", func(rng *rand.Rand, size int) ([]byte, error) {
		var b bytes.Buffer
		z := zip.NewWriter(&b)
		w, err := z.Create("word/document.xml")
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(text(rng, size)); err != nil {
			return nil, err
		}
		if err := z.Close(); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}},
	{"archive", "gz", func(rng *rand.Rand, size int) ([]byte, error) {
		var b bytes.Buffer
		z := gzip.NewWriter(&b)
		if _, err := z.Write(text(rng, size*3)); err != nil {
			return nil, err
		}
		if err := z.Close(); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}},
	{"eod", "sh", func(rng *rand.Rand, size int) ([]byte, error) {
		return []byte("#!/bin/sh\n# end of day\n: " + strings.ReplaceAll(string(text(rng, size)), "\n", "\n: ") + "\n"), nil
	}},
}
