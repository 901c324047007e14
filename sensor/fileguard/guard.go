// Long (about 500 lines) on purpose: Handle answers a fanotify permission
// event while the writer waits, so the tree lookup, its caches and the
// stop decision are read together as one synchronous path.

// Package fileguard is the synchronous half of ransomware protection: a
// fileactivity.Hook that scores every file observation per process tree
// (sensor/detect/ransomware) and, in enforce mode, stops the tree inside the
// fanotify read loop — before the encryptor's next open in a watched folder
// returns. Decoys (sensor/canary) are guarded the same way.
//
// Order of a stop: SIGSTOP the tree root and every descendant (no worker can
// fork or write while the sensor decides), confirm, deny the pending open,
// SIGKILL the stopped set, then emit the verdict event that the ransomware
// detector turns into an alert. The pipeline is asynchronous and would lose
// hundreds of files at encryptor speed; this path is not.
package fileguard

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/canary"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/fileactivity"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/response"
)

// Options configure a Guard.
type Options struct {
	Rules    *ransomware.Rules
	Enforce  bool
	ProcRoot string
	Self     int
	// Canaries may be nil (no decoys planted).
	Canaries *canary.Set
	// Emit receives verdict events (pipeline.Emit).
	Emit func(event.Event)
	// Quarantine, when set, moves an encryptor's executable into the
	// quarantine after its tree was killed (enforce mode only; files:
	// quarantine_encryptor). It answers whether the file was quarantined
	// and a one-line detail. The guard never offers it a spawner (a shell
	// or interpreter), the RMM agent's own executable or the sensor's; the
	// callee bounds the rest (allowed roots: never /usr or /bin).
	Quarantine func(path string) (ok bool, detail string)
	// RMM finds the remote-management agent a process is or descends from
	// (nil: none looked up). A tree under an agent is stopped at a lower
	// score: the Kaseya payload ran as the agent's grandchild.
	RMM RMMLookup
	Log *slog.Logger
	Now func() time.Time
}

// RMMLookup is what the guard needs to know about RMM lineage; the agent
// wiring implements it over the RMM catalog and /proc.
type RMMLookup interface {
	AgentOf(pid int) *ransomware.RMMAgent
}

// Guard implements fileactivity.Hook.
type Guard struct {
	o    Options
	tree *response.Tree
	log  *slog.Logger

	// noOpenPerm: the file source asks for no permission event per open,
	// so no write is sampled before it (SetNoOpenPerm).
	noOpenPerm bool

	mu     sync.Mutex
	scorer *ransomware.Scorer
	before map[string]ransomware.Features // content before a write, by path
	keys   map[int]treeKey
	// sensorLine holds the sensor and its ancestors: behaviour is never
	// grouped up into them, or stopping the "tree" would mean stopping the
	// sensor's own parents (and be refused, leaving the encryptor running).
	sensorLine map[int]bool
	stopped    map[int]time.Time // pids stopped by the guard: their opens are denied
	// smu guards stopped too (writers hold mu and smu), so Prejudge can
	// read it without waiting for a Handle in progress; pre guards the
	// intent reader Prejudge uses.
	smu       sync.Mutex
	pre       sync.Mutex
	preIntent *intentReader
	// suspects are the processes (and their parents) whose tree the
	// scorer found suspicious, and when (guarded by smu): Prejudge makes
	// their opens of new files wait for the events queued ahead.
	suspects map[int]time.Time
	// owners remember which tree (and lineage) last opened or wrote each
	// recent path: a one-shot worker (`mv`, `rm`) is often gone, reaped,
	// by the time its rename or delete is read, and its event is then
	// attributed to the family whose file it moved.
	owners map[string]treeKey
	// rmm caches the RMM lookup per tree root, so the /proc walk runs once
	// per tree, not per file event.
	rmm    map[int]rmmEntry
	intent *intentReader
}

type rmmEntry struct {
	agent *ransomware.RMMAgent
	at    time.Time
}

type treeKey struct {
	root      int
	ancestors []ransomware.Spawner
	at        time.Time
}

// New returns a guard.
func New(o Options) *Guard {
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Guard{
		o: o, tree: response.NewTree(o.ProcRoot, o.Self, os.Getppid()), log: o.Log.With(logkey.Component, "fileguard"),
		scorer: ransomware.NewScorer(o.Rules), before: map[string]ransomware.Features{}, keys: map[int]treeKey{}, stopped: map[int]time.Time{},
		sensorLine: ancestorsOf(o.ProcRoot, o.Self), rmm: map[int]rmmEntry{}, intent: newIntentReader(o.ProcRoot), preIntent: newIntentReader(o.ProcRoot),
		owners: map[string]treeKey{}, suspects: map[int]time.Time{},
	}
}

// maxSuspects bounds the suspect set under a storm of suspicious trees.
const maxSuspects = 4096

// noteSuspect records pid and its parent as belonging to a suspicious
// tree: the parent too, since one-file workers are new processes each.
func (g *Guard) noteSuspect(pid int, ancestors []ransomware.Spawner, now time.Time) {
	g.smu.Lock()
	defer g.smu.Unlock()
	if len(g.suspects) >= maxSuspects {
		clear(g.suspects)
	}
	g.suspects[pid] = now
	if len(ancestors) > 0 && !g.sensorLine[ancestors[0].PID] {
		g.suspects[ancestors[0].PID] = now
	}
}

// suspectLocked reports a pid noted within the scorer's window (smu
// held).
func (g *Guard) suspectLocked(pid int, now time.Time) bool {
	at, ok := g.suspects[pid]
	return ok && now.Sub(at) <= g.o.Rules.Window
}

// ancestorsOf returns pid and its ancestors up to pid 1. Ancestors of a
// running process never change (an orphan is re-parented, not re-rooted).
func ancestorsOf(procRoot string, pid int) map[int]bool {
	line := map[int]bool{1: true}
	proctree.Up(pid, func(pid int) (int, bool) {
		line[pid] = true
		st, err := response.ReadStat(procRoot, pid)
		return st.PPID, err == nil
	})
	return line
}

// Handle implements fileactivity.Hook.
func (g *Guard) Handle(a *fileactivity.Activity) fileactivity.Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	if _, ok := g.stopped[a.PID]; ok && a.PID > 0 {
		return fileactivity.Verdict{Deny: true}
	}
	root, ancestors, gone := g.treeOf(a.PID, now)
	if gone {
		root, ancestors = g.ownerOf(a, root, ancestors, now)
	} else if a.PID > 0 && (a.Op == fileactivity.OpOpen || a.Op == fileactivity.OpCloseWrite) {
		g.own(a.Path, treeKey{root: root, ancestors: ancestors, at: now})
	}
	obs := ransomware.Obs{Time: now, PID: a.PID, Path: a.Path, OldPath: a.OldPath, Tree: root, Ancestors: ancestors}
	canaryHit := g.o.Canaries != nil && (g.o.Canaries.Is(a.Path) || a.OldPath != "" && g.o.Canaries.Is(a.OldPath))
	obs.Canary = canaryHit
	verdict := fileactivity.Verdict{}
	switch a.Op {
	case fileactivity.OpOpen:
		if canaryHit {
			verdict.Emit = true // every open of a decoy is worth an event
			if g.intent.read(a.PID) != intentWrite {
				return verdict // readers (backup, tar, cp) are allowed
			}
			obs.Op = ransomware.OpOpen
		} else {
			// An empty file has no content to destroy (its writer's
			// output is scored as new): no need to ask what the opener
			// means to do, which tar's and gzip's creates never pay.
			if a.ReadAt == nil || a.Size == 0 {
				// An empty file is being created or filled: for a tree
				// that already damaged a file, this is its next file.
				delete(g.before, a.Path)
				obs.Op = ransomware.OpOpen
				break
			}
			// Every opened file's content is recorded with the family
			// that opened it: a file later replaced by rename or link,
			// or deleted beside an encrypted copy, is judged against it.
			// (An open Prejudge answered is one for reading: its opener
			// has moved on, so its intent is no longer readable, and the
			// event's own descriptor still reads the content it opened.)
			f := sample(a)
			read := ransomware.Obs{Time: now, PID: a.PID, Path: a.Path, Tree: root, Ancestors: ancestors, Op: ransomware.OpRead, After: &f}
			g.scorer.Observe(read)
			if a.Answered || g.intent.read(a.PID) == intentRead {
				return verdict
			}
			g.remember(a.Path, f)
			obs.Op = ransomware.OpOpen
		}
	case fileactivity.OpCloseWrite:
		obs.Op = ransomware.OpWrite
		// A file that was empty when its writer opened it (just created,
		// as in write-new-then-delete) had no content to destroy: it is
		// scored as a new file, so an encrypted copy counts for "replaced".
		if b, ok := g.before[a.Path]; ok {
			if b.Size > 0 {
				obs.Before = &b
			}
			delete(g.before, a.Path)
		}
		if a.ReadAt != nil {
			f := sample(a)
			obs.After = &f
		}
		if obs.Before == nil {
			obs.Op = ransomware.OpCreate // a new file (or one never opened by a writer before)
			obs.Unsampled = g.noOpenPerm
		}
	case fileactivity.OpCreate:
		obs.Op = ransomware.OpCreate
	case fileactivity.OpDelete:
		obs.Op = ransomware.OpDelete
	case fileactivity.OpRename:
		if a.Dir {
			return verdict // renaming a folder changes no content
		}
		obs.Op = ransomware.OpRename
	default:
		return verdict
	}
	if a.PID <= 0 {
		obs.Tree = -1 // fsnotify: no process, one host-wide score, no response
	} else {
		obs.RMM = g.rmmOf(obs.Tree, now)
	}
	v, ok := g.scorer.Observe(obs)
	if a.Op != fileactivity.OpOpen && a.PID > 0 && g.scorer.Suspect(root, now) {
		g.noteSuspect(a.PID, ancestors, now)
	}
	if !ok {
		return verdict
	}
	g.act(v, a, now)
	verdict.Deny = g.o.Enforce && a.Perm
	return verdict
}

// Prejudge implements fileactivity.Prejudger: an open for reading cannot
// destroy content and is allowed before the events queued ahead of it are
// scored; Handle scores it afterwards as before. An open of an empty file
// is allowed at once too, unless events are queued ahead of it (Behind)
// and its opener, or the opener's parent, belongs to a tree the scorer
// found suspicious: a write-new-then-delete encryptor's next create then
// waits until its last copy and delete were judged, instead of running
// ahead of its stop, while an extraction's creates (no score) do not wait
// for the sampling of the files before them (making every create behind
// events wait doubled the file storm's cost). Opens for writing (or of
// unknown intent), decoys and processes this guard has stopped wait for
// the full judgement, in order.
//
// It runs as fanotify's queue is read, while Handle may be scoring earlier
// events: it takes neither the guard's lock nor its intent reader.
func (g *Guard) Prejudge(a *fileactivity.Activity) bool {
	if a.Op != fileactivity.OpOpen || a.PID <= 0 {
		return false
	}
	g.smu.Lock()
	_, stopped := g.stopped[a.PID]
	g.smu.Unlock()
	if stopped || g.o.Canaries != nil && g.o.Canaries.Is(a.Path) {
		return false
	}
	if a.ReadAt == nil || a.Size == 0 {
		if !a.Behind {
			return true
		}
		now := g.o.Now()
		g.smu.Lock()
		sus := g.suspectLocked(a.PID, now)
		g.smu.Unlock()
		if sus {
			return false
		}
		g.pre.Lock()
		ppid := g.preIntent.parent(a.PID)
		g.pre.Unlock()
		g.smu.Lock()
		defer g.smu.Unlock()
		return ppid <= 0 || !g.suspectLocked(ppid, now)
	}
	g.pre.Lock()
	defer g.pre.Unlock()
	return g.preIntent.read(a.PID) == intentRead
}

// Judge is the scorer's view of a process the kernel stopped after a burst
// of file changes (sensor/kernel): the highest current score of its tree,
// of the family groups of its ancestors and of family (the root the kernel
// counted it for, 0 if none), and the threshold that tree is stopped at.
// acted reports a process this guard has already stopped to kill it.
func (g *Guard) Judge(pid, family int) (score, threshold int, acted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	if _, ok := g.stopped[pid]; ok {
		return 0, 0, true
	}
	root, ancestors, _ := g.treeOf(pid, now)
	score = g.scorer.Score(root, now)
	for _, a := range ancestors {
		score = max(score, g.scorer.GroupScore(a.PID, now))
	}
	if family > 0 {
		score = max(score, g.scorer.GroupScore(family, now), g.scorer.Score(family, now))
	}
	return score, g.scorer.Threshold(g.rmmOf(root, now) != nil), false
}

// SetNoOpenPerm tells the guard its file source asks for no permission
// event per open (files.open_permission unless-kernel with the kernel
// tripwires armed): a write is then never sampled before it, and a file
// the tree did not create is judged by what its name says it holds. Call
// it before the source runs.
func (g *Guard) SetNoOpenPerm(on bool) { g.noOpenPerm = on }

// StopTarget returns the pid whose tree a confirmed decoy hit by pid
// should end, as the guard would have stopped it had it seen the hit
// itself: the family root when pid's tree is one of several suspicious
// workers of an ancestor (ransomware.Scorer.FamilyOf, the hit counting as
// one), else the tree's root, the highest ancestor running pid's
// executable (an encryptor and the workers it forked or re-executed). The
// kernel's decoy tripwire stops only the worker that touched the decoy;
// ending that worker's own tree alone let its siblings encrypt on.
func (g *Guard) StopTarget(pid int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	root, ancestors, gone := g.treeOf(pid, now)
	if gone || root <= 0 {
		return pid
	}
	if i := g.scorer.FamilyOf(root, ancestors, now); i >= 0 {
		return ancestors[i].PID
	}
	return root
}

// act stops (enforce) and reports a tree that crossed the threshold.
func (g *Guard) act(v ransomware.Verdict, a *fileactivity.Activity, now time.Time) {
	trigger := event.Event{File: fileactivity.FileOf(a.Path)}
	if a.PID > 0 {
		trigger.Process = processOf(g.o.ProcRoot, a.PID)
	}
	var resp *event.Response
	var stopped []int
	var exes, notes []string
	if g.o.Enforce && v.Tree > 0 {
		resp = &event.Response{Action: event.ActionKill, Result: event.ResultOK, Target: "tree:" + strconv.Itoa(v.Tree)}
		pids, err := g.tree.Stop(v.Tree)
		stopped = pids
		g.smu.Lock()
		for _, p := range pids {
			g.stopped[p] = now
		}
		g.smu.Unlock()
		if g.o.Quarantine != nil {
			exes, notes = g.encryptorExes(pids, v) // read while stopped: a dead process has no exe link
		}
		if err != nil {
			resp.Result = "suspend: " + err.Error()
		} else if err := g.tree.Kill(pids); err != nil {
			resp.Result = "kill: " + err.Error()
		}
		g.scorer.Forget(v)
		g.pruneStopped(now)
	}
	family := ""
	if v.Spawner != nil {
		family = v.Spawner.Name
	}
	g.log.Warn("ransomware behaviour", "tree", v.Tree, "family_root", family, "score", v.Score, logkey.Count, v.Total, "canary", v.Canary,
		"stopped", len(stopped), logkey.Path, a.Path, "reasons", strings.Join(v.Reasons, "; "))
	ev := ransomware.VerdictEvent(v, &trigger, stopped, resp)
	if len(notes) > 0 && ev.Tillwatch != nil && ev.Tillwatch.Ransomware != nil {
		ev.Tillwatch.Ransomware.Reasons = append(ev.Tillwatch.Ransomware.Reasons, notes...)
	}
	switch {
	case len(exes) > 0:
		// Quarantine hashes and moves files and waits for the action
		// executor (which a kill-switch scan may hold): never in the
		// read loop, where every open in the watched trees waits.
		go g.quarantineAndEmit(ev, exes)
	case g.o.Emit != nil:
		g.o.Emit(ev)
	}
	if v.Canary && g.o.Canaries != nil {
		go g.restoreCanaries()
	}
}

// quarantineWait bounds how long the verdict event waits for the quarantine;
// a quarantine still running then is reported in the log only.
const quarantineWait = 10 * time.Second

// quarantineAndEmit quarantines the encryptor's executables and emits the
// verdict event with what was done.
func (g *Guard) quarantineAndEmit(ev event.Event, exes []string) {
	type outcome struct {
		done  []string
		notes []string
	}
	ch := make(chan outcome, 1)
	go func() {
		var o outcome
		for _, exe := range exes {
			ok, detail := g.o.Quarantine(exe)
			if ok {
				o.done = append(o.done, exe)
			} else {
				o.notes = append(o.notes, "executable not quarantined: "+detail)
			}
			g.log.Warn("encryptor executable quarantine", logkey.Path, exe, "quarantined", ok, "detail", detail)
		}
		ch <- o
	}()
	r := ev.Tillwatch.Ransomware
	select {
	case o := <-ch:
		r.Quarantined = o.done
		r.Reasons = append(r.Reasons, o.notes...)
	case <-time.After(quarantineWait):
		r.Reasons = append(r.Reasons, fmt.Sprintf("executable quarantine still running after %s: see the sensor log", quarantineWait))
	}
	if g.o.Emit != nil {
		g.o.Emit(ev)
	}
}

// encryptorExes returns the executables of the stopped processes that may
// be quarantined: not a spawner (a shell or interpreter running the loop
// is a system program, not the encryptor), not the RMM agent's executable,
// not the sensor's, not already deleted, and only one the process's own
// code made misbehave (exeToBlame); why one was not offered comes back in
// notes, for the verdict's reasons.
func (g *Guard) encryptorExes(pids []int, v ransomware.Verdict) (out, notes []string) {
	self, _ := os.Executable()
	seen := map[string]bool{}
	for _, pid := range pids {
		exe := exeOf(g.o.ProcRoot, pid)
		switch {
		case exe == "" || seen[exe] || strings.HasSuffix(exe, " (deleted)") || exe == self:
			continue
		case v.RMM != nil && exe == v.RMM.Executable:
			continue
		case g.o.Rules.IsSpawner(filepath.Base(exe)):
			continue
		}
		seen[exe] = true
		if ok, why := exeToBlame(g.o.ProcRoot, pid, exe); !ok {
			notes = append(notes, "executable not quarantined: "+why)
			g.log.Warn("encryptor executable not offered for quarantine", logkey.Path, exe, "pid", pid, "why", why)
			continue
		}
		out = append(out, exe)
		if len(out) >= 8 {
			break // a tree of many different programs is not one encryptor binary
		}
	}
	return out, notes
}

// restoreCanaries puts tampered decoys back once the tree is dead. It runs
// outside the read loop: its own writes are ignored by the source (self),
// but must never wait on the loop.
func (g *Guard) restoreCanaries() {
	time.Sleep(100 * time.Millisecond) // let the killed tree's last writes land first
	if err := g.o.Canaries.RestoreAll(); err != nil {
		g.log.Error("restoring decoy files failed", logkey.Error, err)
	}
}

func (g *Guard) pruneStopped(now time.Time) {
	g.smu.Lock()
	defer g.smu.Unlock()
	for p, at := range g.stopped {
		if now.Sub(at) > time.Minute {
			delete(g.stopped, p) // the pid may be reused by now
		}
	}
}

// remember keeps the content of a file about to be opened for writing.
func (g *Guard) remember(path string, f ransomware.Features) {
	if len(g.before) >= 8192 {
		clear(g.before) // bound; a lost sample only weakens one observation
	}
	g.before[path] = f
}

func sample(a *fileactivity.Activity) ransomware.Features {
	return ransomware.Sample(a.ReadAt, a.Size)
}

// treeOf returns the key behaviour is aggregated on: the highest ancestor
// running the same executable (an encryptor and the workers it forked or
// re-executed), stopping below pid 1 and below the sensor and its
// ancestors; and that root's ancestors, nearest first (the candidates for
// its family root: ransomware.FamilyRoot). gone reports a process that had
// already exited and been reaped (nothing of it is left in /proc). Cached
// for a second so a storm of events costs one /proc walk per process.
func (g *Guard) treeOf(pid int, now time.Time) (root int, ancestors []ransomware.Spawner, gone bool) {
	if pid <= 0 {
		return -1, nil, false
	}
	if k, ok := g.keys[pid]; ok && now.Sub(k.at) < time.Second {
		return k.root, k.ancestors, false
	}
	exe := exeOf(g.o.ProcRoot, pid)
	root, parent := g.climb(pid, exe)
	if exe == "" && parent == 0 {
		return pid, nil, true
	}
	ancestors = Lineage(g.o.ProcRoot, parent, g.sensorLine)
	if len(g.keys) >= 4096 {
		clear(g.keys)
	}
	g.keys[pid] = treeKey{root: root, ancestors: ancestors, at: now}
	return root, ancestors, false
}

// ownerOf attributes an event of a process that is gone to the tree that
// last opened or wrote the file it acted on (for a rename, the file moved
// into place), if that was recent; else it keeps the lone pid.
func (g *Guard) ownerOf(a *fileactivity.Activity, root int, ancestors []ransomware.Spawner, now time.Time) (int, []ransomware.Spawner) {
	for _, p := range []string{a.OldPath, a.Path} {
		if k, ok := g.owners[p]; ok && p != "" && now.Sub(k.at) <= ownerTTL {
			return k.root, k.ancestors
		}
	}
	return root, ancestors
}

// ownerTTL bounds how old an owner may be to take a gone process's event.
const ownerTTL = 10 * time.Second

func (g *Guard) own(path string, k treeKey) {
	if len(g.owners) >= 8192 {
		clear(g.owners)
	}
	g.owners[path] = k
}

// maxLineage bounds how far up a family root is looked for.
const maxLineage = 8

// Lineage returns pid and its ancestors, nearest first, with their
// executables' base names: at most maxLineage, never pid 1 nor any pid in
// stop (the sensor and its own ancestors, whose "family" must never be
// stopped). These are the candidate family roots of a tree whose root's
// parent is pid; a kernel-side burst counter can group by the same chain.
func Lineage(procRoot string, pid int, stop map[int]bool) []ransomware.Spawner {
	var out []ransomware.Spawner
	proctree.Up(pid, func(pid int) (int, bool) {
		if len(out) >= maxLineage || stop[pid] {
			return 0, false
		}
		exe := exeOf(procRoot, pid)
		if exe == "" {
			return 0, false // gone (or a kernel thread): nothing above is known
		}
		out = append(out, ransomware.Spawner{PID: pid, Name: filepath.Base(strings.TrimSuffix(exe, " (deleted)"))})
		st, err := response.ReadStat(procRoot, pid)
		return st.PPID, err == nil
	})
	return out
}

// climb returns the highest ancestor of pid running exe (pid itself at
// least) and that ancestor's parent (0 when unknown), never climbing into
// pid 1 or the sensor's line.
func (g *Guard) climb(pid int, exe string) (root, parent int) {
	root = pid
	proctree.Up(pid, func(pid int) (int, bool) {
		st, err := response.ReadStat(g.o.ProcRoot, pid)
		if err != nil {
			return 0, false
		}
		if st.PPID <= 1 || g.sensorLine[st.PPID] || exe == "" || exeOf(g.o.ProcRoot, st.PPID) != exe {
			parent = st.PPID
			return 0, false
		}
		root = st.PPID
		return root, true
	})
	return root, parent
}

// rmmOf returns the RMM agent above the tree rooted at root, cached for a
// minute per root (a tree's ancestry does not change while it lives).
func (g *Guard) rmmOf(root int, now time.Time) *ransomware.RMMAgent {
	if g.o.RMM == nil || root <= 0 {
		return nil
	}
	if e, ok := g.rmm[root]; ok && now.Sub(e.at) < time.Minute {
		return e.agent
	}
	if len(g.rmm) >= 4096 {
		clear(g.rmm)
	}
	agent := g.o.RMM.AgentOf(root)
	g.rmm[root] = rmmEntry{agent: agent, at: now}
	return agent
}

func exeOf(procRoot string, pid int) string {
	exe, _ := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "exe"))
	return exe
}

func processOf(procRoot string, pid int) *event.Process {
	p := &event.Process{PID: int64(pid), Executable: strings.TrimSuffix(exeOf(procRoot, pid), " (deleted)")}
	if b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "comm")); err == nil {
		p.Name = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline")); err == nil {
		p.Args = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		p.CommandLine = strings.Join(p.Args, " ")
	}
	return p
}
