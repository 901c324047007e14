package fileactivity

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// fsBackend is the portable fallback. It is degraded by nature: inotify
// reports no pid, reports writes rather than completed writes, and its
// recursive watching races with directories created and filled at once
// (files created before the new directory's watch are reported by a walk).
type fsBackend struct {
	s *Source
	w *fsnotify.Watcher

	mu      sync.Mutex
	limited bool // the watch limit was hit; reported once
	// lastWrite coalesces the burst of write events one save produces.
	lastWrite map[string]time.Time
}

// writeCoalesce is how close together two writes of one file count as one.
const writeCoalesce = 100 * time.Millisecond

func newFsnotify(s *Source) (backend, error) {
	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return nil, err
	}
	b := &fsBackend{s: s, w: w, lastWrite: map[string]time.Time{}}
	for _, root := range s.cfg.Paths {
		if err := w.Add(root); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("watch %s: %w", root, b.explain(err))
		}
		b.addTree(root, nil)
	}
	return b, nil
}

func (b *fsBackend) close() { _ = b.w.Close() }

// explain names the sysctl to raise when the inotify watch limit is hit.
func (b *fsBackend) explain(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: inotify watch limit reached; raise fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=524288)", err)
	}
	return err
}

// addTree watches every directory below root; with emit set, files found
// inside a directory that appeared at run time are reported as created.
func (b *fsBackend) addTree(root string, emit func(event.Event)) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if gone(err) {
			return nil
		}
		if err != nil {
			b.s.lost.WithLabelValues(BackendFsnotify, "unreadable").Inc()
			b.s.log.Warn("cannot watch directory; files below it are not covered", logkey.Path, p, logkey.Error, err)
			return nil
		}
		if d.IsDir() {
			if p != root || emit != nil {
				if err := b.w.Add(p); gone(err) {
					return filepath.SkipDir
				} else if err != nil {
					b.watchFailed(p, err)
					return filepath.SkipDir
				}
			}
			return nil
		}
		if emit != nil && d.Type().IsRegular() {
			b.s.handle(BackendFsnotify, &Activity{Op: OpCreate, Path: p}, emit)
		}
		return nil
	})
}

func (b *fsBackend) watchFailed(p string, err error) {
	b.s.lost.WithLabelValues(BackendFsnotify, "watch").Inc()
	err = b.explain(err)
	if errors.Is(err, syscall.ENOSPC) {
		b.mu.Lock()
		first := !b.limited
		b.limited = true
		b.mu.Unlock()
		if first {
			b.s.log.Error("inotify watch limit reached", logkey.Path, p, logkey.Error, err)
		}
		b.s.health(component, event.HealthDegraded, "inotify watch limit reached: raise the sysctl fs.inotify.max_user_watches; directories beyond the limit are not watched")
		return
	}
	b.s.log.Warn("cannot watch directory", logkey.Path, p, logkey.Error, err)
	b.s.health(component, event.HealthDegraded, fmt.Sprintf("cannot watch %s: %v", p, err))
}

func (b *fsBackend) run(ctx context.Context, emit func(event.Event)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-b.w.Errors:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				b.s.lost.WithLabelValues(BackendFsnotify, "overflow").Inc()
				b.s.health(component, event.HealthDegraded, "inotify queue overflow: file events were lost; raise fs.inotify.max_queued_events")
				continue
			}
			b.s.log.Warn("fsnotify error", logkey.Error, err)
		case ev, ok := <-b.w.Events:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			b.event(ev, emit)
		}
	}
}

func (b *fsBackend) event(ev fsnotify.Event, emit func(event.Event)) {
	if !b.s.under(ev.Name) {
		return
	}
	a := &Activity{Path: ev.Name}
	switch {
	case ev.Has(fsnotify.Create):
		a.Op = OpCreate
		if fi, err := lstat(ev.Name); err == nil && fi.IsDir() {
			a.Dir = true
			if err := b.w.Add(ev.Name); err != nil {
				if !gone(err) { // removed or renamed since: its own event follows
					b.watchFailed(ev.Name, err)
				}
			} else {
				b.addTree(ev.Name, emit)
			}
		}
	case ev.Has(fsnotify.Write):
		now := time.Now()
		b.mu.Lock()
		last, seen := b.lastWrite[ev.Name]
		if len(b.lastWrite) > 4096 {
			clear(b.lastWrite)
		}
		b.lastWrite[ev.Name] = now
		b.mu.Unlock()
		if seen && now.Sub(last) < writeCoalesce {
			return
		}
		a.Op = OpCloseWrite // inotify has no close-write here: the first write of a burst stands in for it
	case ev.Has(fsnotify.Remove):
		a.Op = OpDelete
	case ev.Has(fsnotify.Rename):
		a.Op = OpRename // the old name; the new one arrives as a create
	default:
		return
	}
	b.s.handle(BackendFsnotify, a, emit)
}
