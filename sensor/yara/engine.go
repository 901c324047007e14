package yara

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/filehash"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Health component names this package reports under.
const (
	ComponentRules = "yara/rules" // compile, reload, slow-rule warnings
	ComponentScan  = "yara/scan"  // timeouts, size limits, read errors
)

// Defaults for Options.
const (
	DefaultMaxFileSize  = 32 << 20
	DefaultTimeout      = 10 * time.Second
	DefaultCacheEntries = 8192
)

// Options configure an Engine.
type Options struct {
	// Builtin is the built-in rule tree and BuiltinDir its YARA folder
	// (rules.Builtin, "yara"); nil Builtin means no built-in rules.
	Builtin    fs.FS
	BuiltinDir string
	// Dirs are extra rule folders (--rules; see RuleDir). Watch reloads
	// the set when a file in one of them changes.
	Dirs []string
	// MaxFileSize bounds what ScanFile reads; larger files are skipped
	// and reported (ErrTooLarge).
	MaxFileSize int64
	// Timeout bounds each scan (libyara aborts it).
	Timeout time.Duration
	// CacheEntries bounds the sha256 result cache of ScanFile.
	CacheEntries int
	// Hashes is the sensor's digest cache per file version, shared with
	// enrichment and the kill-switch; nil gives the engine its own.
	Hashes *filehash.Cache
	// SkipSHA256 are digests never scanned: the sensor's own binary embeds
	// the rule text and would match its own signatures.
	SkipSHA256 []string
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Health receives state changes (pipeline.Health.Report); may be nil.
	Health event.HealthFunc
}

// Engine holds the current rule set and scans with it. All methods are
// safe for concurrent use; a reload swaps the set atomically, scans in
// flight finish with the set they started with.
type Engine struct {
	o     Options
	rules atomic.Pointer[Rules]
	skip  map[string]bool

	mu     sync.Mutex
	cache  map[string][]Match
	hashes *filehash.Cache
	order  []string // FIFO of cache keys, for the bound
	owners owners

	scans   *prometheus.CounterVec
	bytes   prometheus.Counter
	reloads *prometheus.CounterVec
	nrules  prometheus.Gauge
}

// New compiles the rule set. A compile failure is a ProblemsError (every
// problem as file:line: reason); a build without cgo returns ErrDisabled.
func New(o Options) (*Engine, error) {
	if !Enabled {
		return nil, ErrDisabled
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = DefaultCacheEntries
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Health == nil {
		o.Health = event.NoHealth
	}
	if o.Hashes == nil {
		o.Hashes = filehash.New(0)
	}
	e := &Engine{o: o, skip: map[string]bool{}, cache: map[string][]Match{}, hashes: o.Hashes}
	for _, s := range o.SkipSHA256 {
		e.skip[s] = true
	}
	e.scans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tillwatch_yara_scans_total", Help: "YARA scans by kind (file, process, sweep) and result (match, clean, cached, skipped, error).",
	}, []string{"kind", "result"})
	e.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "tillwatch_yara_scanned_bytes_total", Help: "Bytes scanned by YARA."})
	e.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tillwatch_yara_reloads_total", Help: "YARA rule set (re)loads by result."}, []string{"result"})
	e.nrules = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tillwatch_yara_rules", Help: "Rules in the active YARA set."})
	for _, c := range []prometheus.Collector{e.scans, e.bytes, e.reloads, e.nrules} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("yara metrics: %w", err)
		}
	}
	r, err := e.compile()
	if err != nil {
		e.reloads.WithLabelValues("error").Inc()
		return nil, err
	}
	e.install(r)
	return e, nil
}

// Load compiles the built-in folder of builtin (nil: none) and dirs into
// one set, the way the sensor and `tillwatch scan` do.
func Load(builtin fs.FS, builtinDir string, dirs []string) (*Rules, error) {
	srcs, err := Sources(builtin, builtinDir, dirs)
	if err != nil {
		return nil, err
	}
	return Compile(srcs)
}

// Sources reads the rule files Load compiles.
func Sources(builtin fs.FS, builtinDir string, dirs []string) ([]Source, error) {
	var srcs []Source
	if builtin != nil {
		b, err := LoadFS(builtin, builtinDir, "rules/"+builtinDir, "tillwatch")
		if err != nil {
			return nil, fmt.Errorf("built-in yara rules: %w", err)
		}
		srcs = append(srcs, b...)
	}
	for _, d := range dirs {
		more, err := LoadPath(d)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, more...)
	}
	if len(srcs) == 0 {
		return nil, errors.New("no YARA rules to load")
	}
	return srcs, nil
}

func (e *Engine) compile() (*Rules, error) {
	return Load(e.o.Builtin, e.o.BuiltinDir, e.o.Dirs)
}

// install makes r the active set and forgets cached results (they were
// computed with the old rules).
func (e *Engine) install(r *Rules) {
	e.rules.Store(r)
	e.mu.Lock()
	clear(e.cache)
	e.order = e.order[:0]
	e.mu.Unlock()
	e.nrules.Set(float64(r.Len()))
	e.reloads.WithLabelValues("ok").Inc()
	if w := r.Warnings(); len(w) > 0 {
		e.o.Health(ComponentRules, event.HealthDegraded, fmt.Sprintf("%d YARA rule warning(s), e.g. %s: fix the rule (slow strings cost every scan)", len(w), w[0]))
	} else {
		e.o.Health(ComponentRules, event.HealthOK, fmt.Sprintf("%d YARA rules loaded", r.Len()))
	}
}

// Rules is the active rule set.
func (e *Engine) Rules() *Rules { return e.rules.Load() }

// Reload recompiles the rule set and swaps it in. When the new set does not
// compile the old one stays active, the failure is reported as a health
// event and returned.
func (e *Engine) Reload() error {
	r, err := e.compile()
	if err != nil {
		e.reloads.WithLabelValues("error").Inc()
		e.o.Health(ComponentRules, event.HealthDegraded, "YARA rule reload failed, the previous set stays active: "+firstLine(err))
		e.o.Log.Warn("yara rule reload failed; keeping the previous set", logkey.Error, err)
		return err
	}
	e.install(r)
	e.o.Log.Info("yara rules reloaded", "rules", r.Len())
	return nil
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Result is the outcome of scanning one file.
type Result struct {
	Path    string
	SHA256  string // set by ScanFile, not by Sweep
	Size    int64
	Matches []Match
	Cached  bool // from the sha256 cache, not scanned again
}

// ScanFile scans the regular file at p: it reads at most MaxFileSize bytes
// while hashing, and scans each (sha256, externals) pair once; later calls
// are answered from the cache until the rules change.
func (e *Engine) ScanFile(p string) (Result, error) {
	res := Result{Path: p}
	fi, err := os.Stat(p)
	if err != nil {
		return res, e.fail("file", err)
	}
	// Only regular files: opening a FIFO or device would block or read
	// forever.
	if !fi.Mode().IsRegular() {
		e.scans.WithLabelValues("file", "skipped").Inc()
		return res, nil
	}
	res.Size = fi.Size()
	if fi.Size() > e.o.MaxFileSize {
		e.scans.WithLabelValues("file", "skipped").Inc()
		e.o.Health(ComponentScan, event.HealthDegraded, fmt.Sprintf("%s (%d bytes) is larger than yara.max_file_size (%d); not scanned", p, fi.Size(), e.o.MaxFileSize))
		return res, fmt.Errorf("%s: %w", p, ErrTooLarge)
	}
	f, err := os.Open(p)
	if err != nil {
		return res, e.fail("file", err)
	}
	defer f.Close()
	before, stable, err := filehash.VersionOf(f)
	if err != nil {
		return res, e.fail("file", err)
	}
	// The digest comes from the sensor's per-version cache (an executable
	// run by many processes is read once), and the scan maps the same open
	// file in libyara: no whole-file buffer in Go memory, which on a busy
	// host was most of the sensor's allocations and CPU.
	res.SHA256, res.Size, err = e.hashes.Sum(f, e.o.MaxFileSize)
	if errors.Is(err, filehash.ErrTooLarge) {
		e.scans.WithLabelValues("file", "skipped").Inc()
		return res, fmt.Errorf("%s: %w", p, ErrTooLarge)
	}
	if err != nil {
		return res, e.fail("file", err)
	}
	if e.skip[res.SHA256] {
		e.scans.WithLabelValues("file", "skipped").Inc()
		return res, nil
	}
	var head [HeadSize]byte
	n, _ := f.ReadAt(head[:], 0)
	x := FileExternals(p, head[:n], e.owners.name(fi))
	key := res.SHA256 + "\x00" + x.Filepath + "\x00" + x.Filename + "\x00" + x.Owner
	e.mu.Lock()
	cached, hit := e.cache[key]
	e.mu.Unlock()
	if hit {
		res.Matches, res.Cached = cached, true
		e.scans.WithLabelValues("file", "cached").Inc()
		return res, nil
	}
	r := e.rules.Load()
	ms, err := r.ScanFD(f.Fd(), x, e.o.Timeout)
	e.bytes.Add(float64(res.Size))
	if err != nil {
		return res, e.fail("file", fmt.Errorf("scan %s: %w", p, err))
	}
	if after, ok, verr := filehash.VersionOf(f); !stable || !ok || verr != nil || after != before {
		// Changed between the digest and the scan (or no identity to
		// tell): report, do not cache.
		res.Matches = ms
		e.count("file", ms)
		return res, nil
	}
	res.Matches = ms
	e.remember(key, ms)
	e.count("file", ms)
	return res, nil
}

func (e *Engine) remember(key string, ms []Match) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.order) >= e.o.CacheEntries {
		delete(e.cache, e.order[0])
		e.order = e.order[1:]
	}
	e.cache[key] = ms
	e.order = append(e.order, key)
}

func (e *Engine) count(kind string, ms []Match) {
	if len(ms) > 0 {
		e.scans.WithLabelValues(kind, "match").Inc()
	} else {
		e.scans.WithLabelValues(kind, "clean").Inc()
	}
}

// fail counts a scan error and reports the kinds an operator must see.
func (e *Engine) fail(kind string, err error) error {
	e.scans.WithLabelValues(kind, "error").Inc()
	switch {
	case errors.Is(err, ErrTimeout):
		e.o.Health(ComponentScan, event.HealthDegraded, err.Error()+": raise yara.timeout or find the slow rule with `tillwatch rules lint`")
	case errors.Is(err, ErrTooManyMatches):
		e.o.Health(ComponentScan, event.HealthDegraded, err.Error())
	}
	return err
}

// owners caches uid -> user name for the owner external.
type owners struct {
	mu sync.Mutex
	m  map[uint32]string
}

func (o *owners) name(fi fs.FileInfo) string {
	uid, ok := fileUID(fi)
	if !ok {
		return ""
	}
	return o.byUID(uid)
}

// byUID is the user name of uid (the number if it has none).
func (o *owners) byUID(uid uint32) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n, hit := o.m[uid]; hit {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	if o.m == nil {
		o.m = map[uint32]string{}
	}
	o.m[uid] = n
	return n
}

// ScanPID scans the memory of process pid.
func (e *Engine) ScanPID(pid int) ([]Match, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: not a process", pid)
	}
	ms, err := e.rules.Load().ScanProc(pid, e.o.Timeout)
	if err != nil {
		return nil, e.fail("process", fmt.Errorf("scan memory of pid %d: %w", pid, err))
	}
	e.count("process", ms)
	return ms, nil
}

// Sweep scans files and folders with the active set; see SweepRules.
func (e *Engine) Sweep(ctx context.Context, roots []string, so SweepOptions, fn func(Result, error)) (SweepStats, error) {
	if so.MaxFileSize <= 0 {
		so.MaxFileSize = e.o.MaxFileSize
	}
	if so.Timeout <= 0 {
		so.Timeout = e.o.Timeout
	}
	st, err := SweepRules(ctx, e.rules.Load(), roots, so, func(r Result, err error) {
		switch {
		case err != nil:
			_ = e.fail("sweep", err)
		default:
			e.count("sweep", r.Matches)
			e.bytes.Add(float64(r.Size))
		}
		if fn != nil {
			fn(r, err)
		}
	})
	return st, err
}
