package kernel

import (
	"context"
	"fmt"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// judgeFresh gathers the facts about a process the fresh-exec tripwire
// stopped, judges it (JudgeFresh) and returns the event: a kernel-stop
// (the detector asks for the tree's kill) or, for honest work, a
// kernel-release after the process was let go and the file forgotten.
func (w *Watch) judgeFresh(ctx context.Context, t Tamper) event.Event {
	ff, known := w.o.Layer.Fresh(t.Name)
	writer := t.Target
	if writer == 0 && known {
		writer = ff.Writer
	}
	w.waitFeed(ctx, t.TimeNS)
	f := FreshFacts{WriterComm: ff.Comm, ByAgent: known && ff.Family == 0}
	since := time.Now().Add(-FreshWindow)
	if known {
		// The write's record is taken at the syscall's entry; the clock
		// conversion is good to well under this slack.
		since = w.o.Wall(ff.TimeNS).Add(-2 * time.Second)
	}
	var read string
	f.Path, read, f.Confirmed = confirmFresh(w.o.ProcRoot, t.PID, t.Name, ff.Ino, since)
	// The file first, while the process is surely there (in monitor mode
	// it was not stopped and may be gone soon).
	if f.Confirmed {
		f.FileCopyOf = w.tools.copyOf(read)
	}
	if writer > 0 && w.o.Process != nil {
		if p := w.o.Process(writer); p != nil {
			f.WriterExe, f.WriterArgs = p.Executable, p.Args
		}
	}
	if f.WriterExe != "" {
		f.CopyOf = w.tools.copyOf(f.WriterExe)
	}
	if f.Confirmed && w.o.ScanFile != nil {
		rules, err := w.o.ScanFile(read)
		if err != nil {
			w.o.Log.Warn("could not scan a file stopped at exec with YARA; judged without it", "path", f.Path, "error", err)
		}
		f.YARA = rules
	}
	if f.Confirmed && w.o.Approved != nil {
		if t.Reason == ReasonFreshHandoff {
			// Started outside the tree (by a service manager, say): the
			// tree that wrote the file is the one to be approved or not.
			family := t.Family
			if family == 0 && known {
				family = ff.Family
			}
			f.Approved = writer > 0 && w.o.Approved(writer) || family > 0 && w.o.Approved(family)
		} else {
			f.Approved = w.o.Approved(t.PID)
		}
	}
	v := JudgeFresh(f)
	ev := w.event(t)
	writerDesc := f.WriterComm
	if f.WriterExe != "" {
		writerDesc = fmt.Sprintf("%s (pid %d)", f.WriterExe, writer)
	}
	who, whose := " under a remote-management agent", "its tree"
	if t.Reason == ReasonFreshHandoff {
		who, whose = ", started outside every remote-management agent's tree (a hand-off through a service manager, cron, at or the like),", "such a tree"
	}
	ev.Message = fmt.Sprintf("process %d%s ran %q, a file %s made (written by %s); stopped at exec: %s",
		t.PID, who, orName(f.Path, t.Name), whose, orUnknown(writerDesc), v.Why)
	if !v.Kill {
		if f.Confirmed {
			if err := w.o.Layer.Forget(t.Name); err != nil {
				w.o.Log.Warn("could not forget a file let run; its next exec is stopped again", "name", t.Name, "error", err)
			}
		}
		if err := w.o.Layer.Judged(t.PID); err != nil {
			w.o.Log.Warn("could not clear a judged process from the kernel's stopped map", "pid", t.PID, "error", err)
		}
		if err := resume(t.PID); err != nil {
			w.o.Log.Warn("could not let a stopped process go; kill -CONT it by hand", "pid", t.PID, "error", err)
		}
		ev.Event.Action, ev.Event.Type = ActionRelease, []string{"allowed"}
		w.o.Log.Info("process stopped at exec let go", "pid", t.PID, "file", f.Path, "why", v.Why)
	}
	return ev
}

func orName(path, name string) string {
	if path != "" {
		return path
	}
	return name
}

// waitFeed waits, at most FeedWait, until the process table has applied
// the kernel's records up to ns: the writer's exec (a shell that opened the
// file and then became base64) comes before the stop in the kernel's order
// but on another ring.
func (w *Watch) waitFeed(ctx context.Context, ns uint64) {
	if w.o.FeedAt == nil {
		return
	}
	deadline := time.Now().Add(w.o.FeedWait)
	for w.o.FeedAt() < ns && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// taintDescendants marks what the agent forked before the watch marked it
// (it learns of the agent's exec after the fact; an agent that starts a
// procedure at once would otherwise run it untainted): each child of the
// agent starts a family, its descendants join it, as the kernel does at
// fork.
func (w *Watch) taintDescendants(agent int) {
	children := childrenIn(w.o.ProcRoot)
	var walk func(pid, family, depth int)
	walk = func(pid, family, depth int) {
		if depth > 32 {
			return
		}
		for _, c := range children[pid] {
			fam := family
			if fam == 0 {
				fam = c
			}
			if err := w.o.Layer.TaintChild(c, fam); err != nil {
				w.o.Log.Warn("could not mark a process under an RMM agent in the kernel", "pid", c, "error", err)
			}
			walk(c, fam, depth+1)
		}
	}
	walk(agent, 0, 0)
}
