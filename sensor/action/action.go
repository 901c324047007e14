// Package action carries out verified kill-switch commands on this host:
// disable or re-enable an RMM product, kill processes, quarantine a file,
// isolate the host from the network (and release it) and scan paths.
//
// Verification (signature, expiry, replay, targeting) happens before a
// Request reaches this package; the Executor still trusts nothing in it.
// Every action validates its parameters first, checks its targets against
// the protected pids and the allowed roots, is idempotent, and answers with
// a typed Result that is shipped to the collector. Nothing here ever runs a
// shell or a program named by a command: the only program it starts is
// systemctl, with a fixed argv and a unit name from the catalog that passed
// a strict pattern.
//
// State that must survive a sensor restart (disabled products with the
// masks to undo, isolation) lives in StateDir/action/state.json, written
// atomically; quarantined files and their metadata live in QuarantineDir.
//
// Linux is the full platform. The OS-specific parts live in *_linux.go files
// with *_other.go siblings that make those actions answer "refused: not
// supported on this OS", so a Windows implementation slots in by file suffix.
package action

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"github.com/tillwatch/tillwatch/internal/filehash"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// Actions (the kill-switch allow-list).
const (
	ActDisableRMM     = "disable-rmm"
	ActEnableRMM      = "enable-rmm"
	ActKillProcess    = "kill-process"
	ActQuarantineFile = "quarantine-file"
	ActIsolateHost    = "isolate-host"
	ActReleaseHost    = "release-host"
	ActScan           = "scan"
)

// Result statuses.
const (
	StatusOK      = "ok"      // the action was carried out
	StatusNoop    = "noop"    // the host already was in the asked state
	StatusFailed  = "failed"  // the action was attempted and (partly) failed
	StatusRefused = "refused" // nothing was done: invalid request or a safety check
)

// Log keys local to this package (the shared ones come from internal/logkey).
const (
	keyCommandID = "command_id"
	keyStatus    = "status"
	keyDetail    = "detail"
	keyProduct   = "product"
)

// Errors a caller may branch on.
var (
	// ErrUnsupported: the action is not implemented on this OS.
	ErrUnsupported = errors.ErrUnsupported
	// ErrProtected: the target pid is pid 1, the sensor, one of its
	// ancestors or listed in Options.Protected.
	ErrProtected = errors.New("target is protected (pid 1, the sensor, its ancestors or a configured protected pid)")
	// ErrNotDisabled: KillDisabled was asked to kill a process that does
	// not belong to a disabled product.
	ErrNotDisabled = errors.New("process does not belong to a disabled RMM product")
	// ErrExists: Restore found a file at the original path.
	ErrExists = errors.New("a file exists at the original path; not overwritten")
	// ErrReapply: New could not re-apply the persisted isolation. New then
	// returns a usable Executor together with this error.
	ErrReapply = errors.New("re-applying the persisted host isolation failed")
	// ErrClosed: the Executor was closed.
	ErrClosed = errors.New("action executor closed")
)

// Request is one verified command's action.
type Request struct {
	CommandID string            // for audit and quarantine metadata
	Action    string            // disable-rmm | enable-rmm | kill-process | quarantine-file | isolate-host | release-host | scan
	Params    map[string]string // action parameters; unknown keys are refused
}

// Result is the typed outcome reported back to the collector.
type Result struct {
	Status   string   `json:"status"`             // "ok", "noop" (already in that state), "failed", "refused"
	Detail   string   `json:"detail,omitempty"`   // one line: what was done or why not
	Affected []string `json:"affected,omitempty"` // pids killed, files quarantined, products disabled, rules installed
}

// Options configure an Executor.
type Options struct {
	// StateDir holds the persistent state under StateDir/action (required).
	StateDir string
	// QuarantineDir holds quarantined files; default StateDir/quarantine,
	// created 0700.
	QuarantineDir string
	// AllowedRoots bound quarantine-file, kill-process by path and scan:
	// a path must lie under one of them after symlink resolution.
	AllowedRoots []string
	// Catalog is the RMM catalog (disable-rmm and enable-rmm need it).
	Catalog *rmm.Catalog
	// Approved are the approved RMM products (ids or aliases). disable-rmm
	// still disables them — that is the point of a kill-switch — and says
	// so in the result.
	Approved []string
	// CollectorAddrs are never cut when isolating; isolation is refused
	// without them. A zero port allows every port of that address.
	CollectorAddrs []netip.AddrPort
	// DNSServers stay reachable (udp and tcp 53) when isolating; default:
	// the non-loopback name servers of /etc/resolv.conf (and of
	// systemd-resolved's upstream list when that is present).
	DNSServers []netip.Addr
	// ProcRoot is the proc file system; default /proc.
	ProcRoot string
	// SystemdDir is where masks are written; default /etc/systemd/system.
	SystemdDir string
	// Protected pids are never killed; pid 1, the sensor itself and its
	// ancestors are always protected.
	Protected []int
	// Scan runs YARA over paths; nil makes scan answer failed.
	Scan func(ctx context.Context, paths []string) (matches []string, err error)
	// Log receives one audit line per action; nil discards.
	Log *slog.Logger
	// Hashes is the sensor's digest cache per file version (kill by
	// sha256), shared with enrichment and YARA; nil gives the executor its
	// own.
	Hashes *filehash.Cache
}

// Executor runs verified actions. Run calls are serialised; DisabledProduct
// is lock-free and cheap, for the exec path. Safe for concurrent use.
type Executor struct {
	o          Options
	log        *slog.Logger
	dir        string // StateDir/action
	qdir       string
	roots      []string // resolved allowed roots
	fenced     []string // resolved state and quarantine dirs: never a target
	protected  map[int]bool
	self       int
	matcher    *rmm.Matcher
	approved   map[string]bool
	dns        []netip.Addr
	collectors []netip.AddrPort
	// systemdRun is the directory whose existence means systemd runs;
	// systemctlBin, when set, replaces the fixed systemctl locations (tests
	// on hosts without systemd).
	systemdRun   string
	systemctlBin string
	hashes       *filehash.Cache // executable digests per file version

	mu     sync.Mutex // serialises Run, Restore and state changes
	st     *persisted
	closed bool
	// disabled is the set of disabled product ids, swapped on change so
	// DisabledProduct never takes a lock.
	disabled atomic.Pointer[map[string]bool]
}

// New loads the persisted state and re-applies the host isolation if it was
// on. If only the re-application fails, New returns a usable Executor and an
// error wrapping ErrReapply: the caller reports it (health) and keeps the
// executor, which can still release the host.
func New(o Options) (*Executor, error) {
	if o.StateDir == "" {
		return nil, errors.New("action: StateDir is required")
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.SystemdDir == "" {
		o.SystemdDir = "/etc/systemd/system"
	}
	if o.Hashes == nil {
		o.Hashes = filehash.New(0)
	}
	if o.QuarantineDir == "" {
		o.QuarantineDir = filepath.Join(o.StateDir, "quarantine")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	e := &Executor{
		o:          o,
		log:        o.Log.With(logkey.Component, "action"),
		dir:        filepath.Join(o.StateDir, "action"),
		qdir:       filepath.Clean(o.QuarantineDir),
		self:       os.Getpid(),
		hashes:     o.Hashes,
		systemdRun: "/run/systemd/system",
		approved:   map[string]bool{},
	}
	var errs []error
	for _, d := range []string{e.dir, e.qdir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			errs = append(errs, fmt.Errorf("action: create %s: %w", d, err))
		} else if err := os.Chmod(d, 0o700); err != nil {
			errs = append(errs, fmt.Errorf("action: chmod %s: %w", d, err))
		}
	}
	for _, r := range o.AllowedRoots {
		if !filepath.IsAbs(r) {
			errs = append(errs, fmt.Errorf("action: allowed root %q is not absolute", r))
			continue
		}
		e.roots = append(e.roots, resolveLoose(r))
	}
	for _, a := range o.CollectorAddrs {
		if !a.IsValid() {
			errs = append(errs, fmt.Errorf("action: collector address %v is not valid", a))
			continue
		}
		e.collectors = append(e.collectors, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
	}
	if o.Catalog != nil {
		e.matcher = rmm.NewMatcher(o.Catalog, runtime.GOOS)
		ids, err := o.Catalog.Resolve(o.Approved)
		if err != nil {
			errs = append(errs, fmt.Errorf("action: approved products: %w", err))
		}
		e.approved = ids
	} else if len(o.Approved) > 0 {
		errs = append(errs, errors.New("action: Approved given without a Catalog"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	e.fenced = []string{resolveLoose(o.StateDir), resolveLoose(e.qdir)}
	e.protected = map[int]bool{1: true, e.self: true}
	for _, p := range o.Protected {
		e.protected[p] = true
	}
	for _, p := range e.ancestors() {
		e.protected[p] = true
	}
	e.dns = o.DNSServers
	if len(e.dns) == 0 {
		e.dns = defaultDNS()
	}
	st, err := loadState(e.dir)
	if err != nil {
		return nil, err
	}
	e.st = st
	e.publishDisabled()
	if st.Isolation != nil {
		if err := e.reapplyIsolation(); err != nil {
			e.log.Error("host isolation not re-applied: the host is NOT isolated; release-host clears the state, isolate-host retries",
				logkey.Error, err)
			return e, fmt.Errorf("%w: %w", ErrReapply, err)
		}
		e.log.Warn("host isolation re-applied from persisted state", keyCommandID, st.Isolation.CommandID)
	}
	return e, nil
}

// resolveLoose resolves symlinks of p when it exists, else cleans it: a root
// that is not mounted yet still bounds paths lexically.
func resolveLoose(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// Close stops accepting requests. Persisted effects (masks, isolation,
// quarantine) stay in place on purpose: they must outlive the sensor.
func (e *Executor) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// Run validates r and carries it out. It is idempotent, never panics and
// always answers with a Result; a Request that fails validation is refused
// with nothing done.
func (e *Executor) Run(ctx context.Context, r Request) (res Result) {
	if ctx == nil {
		ctx = context.Background()
	}
	defer func() {
		if v := recover(); v != nil {
			res = failed("internal error: %v", v)
		}
		res.Detail = oneLine(res.Detail)
		lvl := slog.LevelWarn
		if res.Status == StatusFailed {
			lvl = slog.LevelError
		}
		e.log.Log(ctx, lvl, "kill-switch action", keyCommandID, oneLine(r.CommandID), logkey.Action, oneLine(r.Action),
			keyStatus, res.Status, keyDetail, res.Detail, logkey.Count, len(res.Affected))
	}()
	p, err := parse(r)
	if err != nil {
		return refused("%v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return failed("%v", ErrClosed)
	}
	switch r.Action {
	case ActDisableRMM:
		return e.disableRMM(ctx, r.CommandID, p.product)
	case ActEnableRMM:
		return e.enableRMM(ctx, p.product)
	case ActKillProcess:
		return e.killProcess(p)
	case ActQuarantineFile:
		return e.quarantine(r.CommandID, p.path)
	case ActIsolateHost:
		return e.isolate(r.CommandID)
	case ActReleaseHost:
		return e.release()
	case ActScan:
		return e.scan(ctx, p.paths)
	}
	return refused("unknown action %q", r.Action) // parse already refuses; kept for safety
}

func result(status, format string, a ...any) Result {
	return Result{Status: status, Detail: fmt.Sprintf(format, a...)}
}

func refused(format string, a ...any) Result { return result(StatusRefused, format, a...) }
func failed(format string, a ...any) Result  { return result(StatusFailed, format, a...) }

// unsupported is the answer of an action this OS does not implement.
func unsupported(action string) Result {
	return refused("%s: not supported on this OS (%s)", action, runtime.GOOS)
}

// oneLine makes s a single printable line of bounded length: details go
// into alerts and terminals, where a newline from an error or a path must
// not forge a second line.
func oneLine(s string) string {
	const max = 1024
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		switch {
		case r == '\n' || r == '\r':
			b.WriteString("; ")
		case !unicode.IsPrint(r) && r != ' ':
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// underRoot reports whether the resolved path p lies strictly below one of
// the allowed roots and outside the sensor's own state.
func (e *Executor) underRoot(p string) error {
	if len(e.roots) == 0 {
		return errors.New("no allowed roots configured")
	}
	for _, f := range e.fenced {
		if within(p, f) || p == f {
			return fmt.Errorf("%s is in the sensor's own state directory", p)
		}
	}
	if slices.ContainsFunc(e.roots, func(r string) bool { return within(p, r) }) {
		return nil
	}
	return fmt.Errorf("%s is not under an allowed root (%s)", p, strings.Join(e.roots, ", "))
}

// within reports whether p lies strictly below dir (both cleaned).
func within(p, dir string) bool {
	if dir == string(filepath.Separator) {
		return p != dir && filepath.IsAbs(p)
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}

// isProtected reports whether pid must never be signalled.
func (e *Executor) isProtected(pid int) bool { return e.protected[pid] }

func (e *Executor) protectedList() []int {
	out := make([]int, 0, len(e.protected))
	for p := range e.protected {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
