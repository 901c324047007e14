// Package proctree keeps the sensor's process table: what is (and recently
// was) running, and who started whom. Detectors read ancestry from it long
// after a short-lived parent has exited, which is why exited processes are
// kept for a while instead of being dropped on exit.
//
// The table is fed by sources (sensor/process) and read by detectors; it
// does no I/O and is safe for concurrent use.
package proctree

import (
	"container/heap"
	"sync"
	"time"
)

// UnknownUID is Proc.UID when the user of a process is not known. Zero is
// root, so zero cannot mean "unknown".
const UnknownUID = -1

// ExitCodeUnknown is Proc.ExitCode when the process ended but its exit status
// was not observed (the polling backend sees a pid vanish, not a status).
const ExitCodeUnknown = -1

// StartSlack is how far apart two start times of the same pid may be and
// still name the same process. Start times come from different clocks (the
// proc connector's nanosecond event time, /proc's 10ms ticks since boot), so
// they never match exactly; a pid being reused within a second is far less
// likely than that skew.
const StartSlack = time.Second

// Proc is one process as the table knows it. Zero-valued fields are unknown,
// except UID (see UnknownUID) and ExitCode (meaningful only when Exited).
type Proc struct {
	PID int
	// PPID is the parent that created the process (kept after the parent
	// exits and the kernel reparents the orphan).
	PPID int
	// Start is when the process was created (fork, not exec).
	Start       time.Time
	Name        string // process name; for a fork that never exec'd, the parent's
	Executable  string // path of the executable image, as the kernel reports it
	CommandLine string // Args joined with spaces
	Args        []string
	Cwd         string
	UID         int    // effective uid, or UnknownUID
	User        string // name of UID, "" if unknown
	Exited      bool
	End         time.Time // when it exited; meaningful only when Exited
	ExitCode    int       // shell-style code (128+signal if killed), or ExitCodeUnknown
}

// Options tunes a Table. The zero value gives the defaults.
type Options struct {
	// Retain is how long an exited process is kept after Exit, so that the
	// ancestry of its children stays complete. Default 10m.
	Retain time.Duration
	// MaxEntries bounds the table. When full, the longest-exited process is
	// evicted first; if none has exited, an arbitrary running one is. Default 32768.
	MaxEntries int
	// Now is the clock used for retention. Default time.Now.
	Now func() time.Time
}

// Defaults for Options.
const (
	DefaultRetain     = 10 * time.Minute
	DefaultMaxEntries = 32768
)

// Table is a concurrency-safe process table keyed by pid. Create it with New;
// the zero value is not usable. It holds no goroutines and needs no Close.
type Table struct {
	retain time.Duration
	max    int
	now    func() time.Time

	mu      sync.Mutex
	entries map[int]*entry
	exited  exitHeap // exited entries by exit time; may hold stale items
	seq     uint64   // identifies entries so stale heap items can be told apart
	evicted uint64
}

type entry struct {
	Proc
	// parentStart is the start of the process that was PPID when this
	// entry was recorded, or zero. It lets Ancestry tell the real parent
	// from a later process that reused the parent's pid.
	parentStart time.Time
	seq         uint64
	exitedAt    time.Time // table clock at Exit, drives retention
}

// New returns an empty table.
func New(opts Options) *Table {
	t := &Table{
		retain:  opts.Retain,
		max:     opts.MaxEntries,
		now:     opts.Now,
		entries: make(map[int]*entry),
	}
	if t.retain <= 0 {
		t.retain = DefaultRetain
	}
	if t.max <= 0 {
		t.max = DefaultMaxEntries
	}
	if t.now == nil {
		t.now = time.Now
	}
	return t
}

// sameStart reports whether two start times can belong to the same process;
// an unknown (zero) start matches anything.
func sameStart(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return true
	}
	d := a.Sub(b)
	return d <= StartSlack && d >= -StartSlack
}

// Upsert records a process seen at exec or discovered by a scan.
//
// If the pid is already known as the same process (start times agree within
// StartSlack, or one is unknown while the old entry is still running), the
// entry is updated: if p has a Name, its image (Name, Executable,
// CommandLine, Args) replaces the old one as a whole; otherwise non-empty
// fields of p win (UID unless UnknownUID); the
// earliest known Start is kept so every event of one process carries the
// same start, and the first known PPID is kept (see mergeLocked). If the known
// entry is an older process (p starts later, or the old one has exited and p
// has no start), p replaces it: the pid was reused. If p starts earlier than
// the known entry, p is stale news about a process already replaced, and is
// ignored.
func (t *Table) Upsert(p Proc) {
	if p.PID <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.expireLocked(now)

	old, ok := t.entries[p.PID]
	switch {
	case ok && !p.Start.IsZero() && !old.Start.IsZero() && p.Start.Before(old.Start.Add(-StartSlack)):
		return // stale
	case ok && sameStart(old.Start, p.Start) && (!old.Exited || p.Exited || (!old.Start.IsZero() && !p.Start.IsZero())):
		t.mergeLocked(old, p, now)
		return
	}
	e := &entry{Proc: p, parentStart: t.liveStartLocked(p.PPID)}
	if e.Exited {
		e.exitedAt = now
	}
	t.insertLocked(e)
}

// mergeLocked folds p into the existing entry e of the same process.
func (t *Table) mergeLocked(e *entry, p Proc, now time.Time) {
	if e.Start.IsZero() || (!p.Start.IsZero() && p.Start.Before(e.Start)) {
		e.Start = p.Start
	}
	// The first parent recorded wins: a fork record names the real parent,
	// while /proc read later may show init or a subreaper after the parent
	// exited, and lineage is what detectors need.
	if e.PPID <= 0 && p.PPID > 0 {
		e.PPID = p.PPID
		e.parentStart = t.liveStartLocked(p.PPID)
	}
	// An exec replaces the image as a unit, so a p that names an image
	// replaces all of it: keeping the old executable beside a new name
	// (say, the forking shell's path after a failed /proc read) would lie.
	if p.Name != "" {
		e.Name, e.Executable, e.CommandLine, e.Args = p.Name, p.Executable, p.CommandLine, p.Args
	}
	if p.Cwd != "" {
		e.Cwd = p.Cwd
	}
	if p.User != "" {
		e.User = p.User
	}
	if p.UID != UnknownUID {
		e.UID = p.UID
	}
	if p.Exited && !e.Exited {
		e.Exited, e.End, e.ExitCode, e.exitedAt = true, p.End, p.ExitCode, now
		heap.Push(&t.exited, exitItem{pid: e.PID, seq: e.seq, at: now})
	}
}

// Fork records that parent created child at the given time, before any exec.
// The child starts as a copy of the parent (that is what fork makes), so a
// child that never execs, or exits before it can be inspected, still has a
// name and a parent. A known child with a matching start is left alone; any
// other entry for the child pid is replaced, since fork proves a new process.
func (t *Table) Fork(parent, child int, at time.Time) {
	if child <= 0 || parent == child {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.now())

	if old, ok := t.entries[child]; ok && !old.Exited && !old.Start.IsZero() && sameStart(old.Start, at) {
		return
	}
	e := &entry{Proc: Proc{PID: child, PPID: parent, Start: at, UID: UnknownUID}}
	if p, ok := t.entries[parent]; ok && !p.Exited {
		e.parentStart = p.Start
		e.Name, e.Executable, e.CommandLine, e.Cwd = p.Name, p.Executable, p.CommandLine, p.Cwd
		e.Args = p.Args // shared: Args slices are never mutated in place
		e.UID, e.User = p.UID, p.User
	}
	t.insertLocked(e)
}

// Exit marks pid as ended at the given time with the given exit code and
// keeps it for Options.Retain so its children's ancestry stays complete.
// Unknown pids and repeated exits are ignored.
func (t *Table) Exit(pid int, at time.Time, code int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.expireLocked(now)
	e, ok := t.entries[pid]
	if !ok || e.Exited {
		return
	}
	e.Exited, e.End, e.ExitCode, e.exitedAt = true, at, code, now
	heap.Push(&t.exited, exitItem{pid: pid, seq: e.seq, at: now})
}

// Get returns a copy of the entry for pid. The Args slice is shared with the
// table and must not be modified.
func (t *Table) Get(pid int) (Proc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.now())
	e, ok := t.entries[pid]
	if !ok {
		return Proc{}, false
	}
	return e.Proc, true
}

// Ancestry returns the ancestors of pid, nearest first (parent, grandparent,
// ...), including ancestors that have already exited. It stops at pid 1, at
// an unknown parent, after max entries (max <= 0 means no limit), and where
// pid reuse breaks the chain: a parent whose start differs from the one
// recorded for the child, or that started after the child. It never loops:
// a pid already on the chain ends it. It returns nil if pid is unknown.
func (t *Table) Ancestry(pid int, max int) []Proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.now())
	cur, ok := t.entries[pid]
	if !ok {
		return nil
	}
	var out []Proc
	seen := map[int]bool{pid: true}
	for (max <= 0 || len(out) < max) && cur.PID != 1 {
		p, ok := t.entries[cur.PPID]
		if !ok || seen[cur.PPID] {
			break
		}
		if !cur.parentStart.IsZero() && !p.Start.IsZero() && !sameStart(cur.parentStart, p.Start) {
			break // the pid now belongs to another process
		}
		if !cur.Start.IsZero() && p.Start.After(cur.Start.Add(StartSlack)) {
			break // a parent cannot start after its child: pid reuse
		}
		seen[p.PID] = true
		out = append(out, p.Proc)
		cur = p
	}
	return out
}

// Running returns a copy of every entry that has not exited, in no
// particular order. Sources use it to reconcile the table with a fresh scan.
func (t *Table) Running() []Proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Proc, 0, len(t.entries))
	for _, e := range t.entries {
		if !e.Exited {
			out = append(out, e.Proc)
		}
	}
	return out
}

// Len returns the number of entries, running and retained exited ones.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.now())
	return len(t.entries)
}

// Evicted returns how many entries were dropped because the table was full
// (not counting exited entries that aged out normally).
func (t *Table) Evicted() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evicted
}

// liveStartLocked returns the start of the running entry for pid, or zero.
// An exited entry is not the parent of a process being recorded now: its
// pid must have been reused by a process the table has not seen yet.
func (t *Table) liveStartLocked(pid int) time.Time {
	if p, ok := t.entries[pid]; ok && !p.Exited {
		return p.Start
	}
	return time.Time{}
}

// insertLocked adds e as a new process, replacing any entry with its pid
// and making room if the table is full.
func (t *Table) insertLocked(e *entry) {
	if _, ok := t.entries[e.PID]; !ok {
		for len(t.entries) >= t.max {
			t.evictOneLocked()
		}
	}
	t.seq++
	e.seq = t.seq
	t.entries[e.PID] = e
	if e.Exited {
		heap.Push(&t.exited, exitItem{pid: e.PID, seq: e.seq, at: e.exitedAt})
	}
	// Stale heap items (their entry was replaced) are normally dropped as
	// they age out; under heavy pid reuse they could pile up, so rebuild.
	if len(t.exited) > 2*len(t.entries)+64 {
		t.compactLocked()
	}
}

// evictOneLocked drops the longest-exited entry, or if none has exited an
// arbitrary running one: the bound on memory matters more on a till than a
// complete table, and a full table of running processes means the table is
// too small anyway (Evicted makes that visible).
func (t *Table) evictOneLocked() {
	for len(t.exited) > 0 {
		it := heap.Pop(&t.exited).(exitItem)
		if t.liveItem(it) {
			delete(t.entries, it.pid)
			t.evicted++
			return
		}
	}
	for pid := range t.entries {
		delete(t.entries, pid)
		t.evicted++
		return
	}
}

// expireLocked removes exited entries older than retain. Each call pops only
// expired items off the heap, so the cost is amortised over the exits.
func (t *Table) expireLocked(now time.Time) {
	cutoff := now.Add(-t.retain)
	for len(t.exited) > 0 && t.exited[0].at.Before(cutoff) {
		it := heap.Pop(&t.exited).(exitItem)
		if t.liveItem(it) {
			delete(t.entries, it.pid)
		}
	}
}

// liveItem reports whether a heap item still describes the entry in the map.
func (t *Table) liveItem(it exitItem) bool {
	e, ok := t.entries[it.pid]
	return ok && e.seq == it.seq && e.Exited
}

func (t *Table) compactLocked() {
	h := t.exited[:0]
	for _, it := range t.exited {
		if t.liveItem(it) {
			h = append(h, it)
		}
	}
	t.exited = h
	heap.Init(&t.exited)
}

type exitItem struct {
	pid int
	seq uint64
	at  time.Time
}

// exitHeap is a min-heap of exited entries by table time of exit.
type exitHeap []exitItem

func (h exitHeap) Len() int           { return len(h) }
func (h exitHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h exitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *exitHeap) Push(x any)        { *h = append(*h, x.(exitItem)) }
func (h *exitHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
