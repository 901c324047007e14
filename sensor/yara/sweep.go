package yara

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// SweepOptions bound an on-demand sweep.
type SweepOptions struct {
	// Threads scanning in parallel (default: the number of CPUs).
	Threads int
	// CPU is the share of each thread's time spent scanning, in (0, 1]
	// (default 1). At 0.25 every thread pauses three times as long as its
	// last scan took, so a sweep on a till leaves the till its CPU.
	CPU float64
	// MaxFileSize skips larger files (0: no limit); Timeout bounds each
	// file's scan (0: none).
	MaxFileSize int64
	Timeout     time.Duration
	// FileByFile scans every file with its own call into libyara (the
	// fallback of the batched path, kept selectable so that the YARA
	// benchmark can measure both in one run).
	FileByFile bool
}

// SweepStats count what a sweep did.
type SweepStats struct {
	Files, Bytes, Matches, Errors, Skipped int64
	Elapsed                                time.Duration
}

// SweepRules scans every regular file under roots (files or folders,
// symbolic links not followed) with r. fn is called once per scanned file
// with matches, and once per file that could not be scanned; calls are
// serialised. It stops early when ctx is cancelled and returns ctx's error.
func SweepRules(ctx context.Context, r *Rules, roots []string, so SweepOptions, fn func(Result, error)) (SweepStats, error) {
	if r == nil {
		return SweepStats{}, ErrDisabled
	}
	if so.Threads <= 0 {
		so.Threads = runtime.NumCPU()
	}
	if so.CPU <= 0 || so.CPU > 1 {
		so.CPU = 1
	}
	start := time.Now()
	var (
		st   SweepStats
		mu   sync.Mutex
		wg   sync.WaitGroup
		work = make(chan string, so.Threads*batchFiles*2)
		own  owners
	)
	report := func(res Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, ErrTooLarge):
			st.Skipped++
		case err != nil:
			st.Errors++
		default:
			st.Files++
			st.Bytes += res.Size
			st.Matches += int64(len(res.Matches))
		}
		if fn != nil && (err != nil || len(res.Matches) > 0) {
			fn(res, err)
		}
	}
	// The batch path (batch_cgo.go) needs its own copy of the rules; without
	// it every file is scanned on its own through go-yara.
	var batch *batchRules
	if !so.FileByFile {
		batch, _ = newBatchRules(r)
	}
	if batch != nil {
		defer batch.free()
	}
	for range so.Threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var bs *batchScanner
			if batch != nil {
				if s, err := batch.scanner(so.Timeout); err == nil {
					bs = s
					defer bs.close()
				}
			}
			head := make([]byte, HeadSize)
			paths := make([]string, 0, batchFiles)
			for p := range work {
				// Take what is already queued, up to a batch: one cgo
				// call for all of them.
				paths = append(paths[:0], p)
			fill:
				for len(paths) < batchFiles {
					select {
					case q, ok := <-work:
						if !ok {
							break fill
						}
						paths = append(paths, q)
					default:
						break fill
					}
				}
				t0 := time.Now()
				if bs != nil {
					sweepBatch(bs, r, paths, so, &own, head, report)
				} else {
					for _, p := range paths {
						res, err := sweepFile(r, p, so, &own)
						report(res, err)
					}
				}
				if so.CPU < 1 {
					pause := time.Duration(float64(time.Since(t0)) * (1/so.CPU - 1))
					select {
					case <-ctx.Done():
					case <-time.After(pause):
					}
				}
			}
		}()
	}
	var walkErr error
	for _, root := range roots {
		walkErr = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				report(Result{Path: p}, err)
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			select {
			case work <- p:
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		})
		if walkErr != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	st.Elapsed = time.Since(start)
	return st, walkErr
}

// Batch bounds: files per cgo call, and bytes, so that a batch of large
// files does not hold up cancellation and the CPU budget for long.
const (
	batchFiles = 32
	batchBytes = 16 << 20
)

// sweepBatch opens paths, scans them in batches with bs and reports each.
func sweepBatch(bs *batchScanner, r *Rules, paths []string, so SweepOptions, own *owners, head []byte, report func(Result, error)) {
	files := make([]batchFile, 0, len(paths))
	results := make([]Result, 0, len(paths))
	var size int64
	flush := func() {
		bs.scan(files)
		for i := range files {
			f := &files[i]
			if f.Retry { // more matches than the batch could hold
				f.Matches, f.Err = r.ScanFD(uintptr(f.FD), f.X, so.Timeout)
			}
			closeScanned(f.FD)
			if f.Err != nil {
				report(results[i], fmt.Errorf("%s: %w", results[i].Path, f.Err))
				continue
			}
			results[i].Matches = f.Matches
			report(results[i], nil)
		}
		files, results, size = files[:0], results[:0], 0
	}
	for _, p := range paths {
		fd, n, uid, nhead, err := openForScan(p, head)
		if errors.Is(err, errors.ErrUnsupported) {
			res, err := sweepFile(r, p, so, own)
			report(res, err)
			continue
		}
		if err != nil {
			report(Result{Path: p}, err)
			continue
		}
		if so.MaxFileSize > 0 && n > so.MaxFileSize {
			closeScanned(fd)
			report(Result{Path: p, Size: n}, fmt.Errorf("%s (%d bytes): %w", p, n, ErrTooLarge))
			continue
		}
		files = append(files, batchFile{FD: fd, X: FileExternals(p, head[:nhead], own.byUID(uid))})
		results = append(results, Result{Path: p, Size: n})
		if size += n; size >= batchBytes {
			flush()
		}
	}
	if len(files) > 0 {
		flush()
	}
}

func sweepFile(r *Rules, p string, so SweepOptions, own *owners) (Result, error) {
	res := Result{Path: p}
	f, err := os.Open(p)
	if err != nil {
		return res, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return res, fmt.Errorf("%s: not a regular file", p)
	}
	res.Size = fi.Size()
	if so.MaxFileSize > 0 && fi.Size() > so.MaxFileSize {
		f.Close()
		return res, fmt.Errorf("%s (%d bytes): %w", p, fi.Size(), ErrTooLarge)
	}
	defer f.Close()
	head := make([]byte, HeadSize)
	n, _ := io.ReadFull(f, head)
	// Scan the file opened and checked above, not the path again: no
	// second open, and no window in which the path could become a FIFO
	// libyara would block on.
	ms, err := r.ScanFD(f.Fd(), FileExternals(p, head[:n], own.name(fi)), so.Timeout)
	if err != nil {
		return res, fmt.Errorf("%s: %w", p, err)
	}
	res.Matches = ms
	return res, nil
}
