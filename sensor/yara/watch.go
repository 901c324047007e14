package yara

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// reloadDebounce collects the several events an editor or `cp` makes per
// save into one reload.
const reloadDebounce = 300 * time.Millisecond

// Watch reloads the rule set whenever a rule file under Dirs is created,
// written, renamed or removed, until ctx is done. The built-in set is
// embedded and never changes. A failed reload keeps the previous set.
func (e *Engine) Watch(ctx context.Context) error {
	if len(e.o.Dirs) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		e.o.Health(ComponentRules, event.HealthDegraded, "cannot watch rule folders, changes need a restart: "+err.Error())
		return err
	}
	defer w.Close()
	for _, d := range e.o.Dirs {
		if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
			d = filepath.Dir(d)
		} else {
			d = RuleDir(d)
		}
		_ = filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err != nil || !de.IsDir() {
				return nil
			}
			if p != d && skipDir(de.Name()) {
				return filepath.SkipDir
			}
			if err := w.Add(p); err != nil {
				e.o.Log.Warn("cannot watch rule folder", logkey.Path, p, logkey.Error, err)
			}
			return nil
		})
	}
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() && !skipDir(fi.Name()) {
					_ = w.Add(ev.Name)
				}
			}
			if RuleExt(ev.Name) {
				fire = time.After(reloadDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.o.Health(ComponentRules, event.HealthDegraded, "rule folder watch: "+err.Error())
		case <-fire:
			fire = nil
			_ = e.Reload()
		}
	}
}
