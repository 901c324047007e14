package action

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// unitPattern is what a systemd service unit name from the catalog must
// look like before it reaches a file name or systemctl's argv: no path
// separators, no leading dash (an option) or dot.
var unitPattern = regexp.MustCompile(`^[A-Za-z0-9@_][A-Za-z0-9@._-]*\.service$`)

// unitName turns a catalog service name into a validated unit name.
func unitName(svc string) (string, error) {
	u := svc
	if !strings.HasSuffix(u, ".service") {
		u += ".service"
	}
	if len(u) > 255 || !unitPattern.MatchString(u) {
		return "", fmt.Errorf("catalog service %s is not a valid unit name", quote(svc))
	}
	return u, nil
}

// DisabledProduct reports whether a process (its executable path and name)
// belongs to a product disabled by disable-rmm: the exec path kills such a
// process on sight (KillDisabled). Lock-free; safe on every exec.
func (e *Executor) DisabledProduct(exe, name string) (product string, ok bool) {
	m := e.disabled.Load()
	if m == nil || len(*m) == 0 || e.matcher == nil {
		return "", false
	}
	p, _ := e.matcher.Process(name, exe)
	if p == nil || !(*m)[p.ID] {
		return "", false
	}
	return p.ID, true
}

// KillDisabled kills the process tree of pid after checking, again, that
// the process belongs to a disabled product and is not protected.
func (e *Executor) KillDisabled(pid int) error {
	if !supportsProcesses {
		return ErrUnsupported
	}
	if e.isProtected(pid) {
		return ErrProtected
	}
	pr, err := e.readProc(pid)
	if err != nil {
		return err
	}
	if pr.Dead {
		return ErrGone
	}
	prod, ok := e.DisabledProduct(pr.Exe, pr.Comm)
	if !ok {
		return ErrNotDisabled
	}
	pids, err := e.killTree(pid)
	if err != nil {
		return fmt.Errorf("kill disabled product %s, pid %d: %w", prod, pid, err)
	}
	e.log.Warn("killed a process of a disabled RMM product", keyProduct, prod, "pids", joinInts(pids))
	return nil
}

// disableRMM runs disable-rmm for one product or "*".
func (e *Executor) disableRMM(ctx context.Context, cmdID, product string) Result {
	if e.o.Catalog == nil {
		return refused("disable-rmm: no RMM catalog loaded")
	}
	if !supportsProcesses || !supportsServices {
		return unsupported(ActDisableRMM)
	}
	var prods []*rmm.Product
	if product == "*" {
		var err error
		if prods, err = e.foundProducts(); err != nil {
			return failed("disable-rmm: %v", err)
		}
		if len(prods) == 0 {
			return result(StatusNoop, "disable-rmm *: no catalog product found running or installed")
		}
	} else {
		p, ok := e.o.Catalog.Product(product)
		if !ok {
			return refused("disable-rmm: unknown product %s", quote(product))
		}
		if p.On(runtime.GOOS) == nil {
			return refused("disable-rmm: product %s has no recognisers for %s", p.ID, runtime.GOOS)
		}
		prods = []*rmm.Product{p}
	}
	var (
		affected, notes []string
		errs            []error
		changed         bool
	)
	for _, p := range prods {
		rec, was := e.st.Disabled[p.ID]
		if !was {
			rec = &disabledProduct{CommandID: cmdID, DisabledAt: time.Now().UTC()}
			e.st.Disabled[p.ID] = rec
			changed = true
			affected = append(affected, "product:"+p.ID)
			if e.approved[p.ID] {
				notes = append(notes, p.ID+" is an approved product: disabled by command")
			}
		}
		// Persist first: from here on the exec path kills the product on
		// sight, even if the rest fails or the sensor restarts.
		e.publishDisabled()
		if err := e.save(); err != nil {
			errs = append(errs, err)
		}
		var units []string
		for _, s := range p.On(runtime.GOOS).Services {
			u, err := unitName(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.ID, err))
				continue
			}
			units = append(units, u)
		}
		a, n, err := e.disableServices(ctx, units, rec)
		affected, notes = append(affected, a...), append(notes, n...)
		changed = changed || len(a) > 0
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.ID, err))
		}
		pids, err := e.killProduct(p)
		if len(pids) > 0 {
			changed = true
			for _, pid := range pids {
				affected = append(affected, fmt.Sprintf("pid:%d", pid))
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.ID, err))
		}
	}
	if err := e.save(); err != nil {
		errs = append(errs, err)
	}
	ids := make([]string, len(prods))
	for i, p := range prods {
		ids[i] = p.ID
	}
	var pids, masks int
	for _, a := range affected {
		pids += b2i(strings.HasPrefix(a, "pid:"))
		masks += b2i(strings.HasPrefix(a, "mask:"))
	}
	res := Result{Status: StatusOK, Affected: affected}
	res.Detail = fmt.Sprintf("disable-rmm: %s disabled: %d process(es) killed, %d unit(s) masked%s", strings.Join(ids, ", "), pids, masks, e.systemdNote())
	switch {
	case len(errs) > 0:
		res.Status = StatusFailed
		res.Detail = fmt.Sprintf("disable-rmm: %s disabled with errors: %v", strings.Join(ids, ", "), errors.Join(errs...))
	case !changed:
		res.Status = StatusNoop
		res.Detail = fmt.Sprintf("disable-rmm: %s already disabled; nothing running", strings.Join(ids, ", "))
	}
	if len(notes) > 0 {
		res.Detail += "; " + strings.Join(notes, "; ")
	}
	return res
}

func (e *Executor) systemdNote() string {
	if e.systemdRunning() {
		return ", active units stopped, enabled units disabled"
	}
	return " (systemd not running: masks only)"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// killProduct kills every running process of p with its descendants.
func (e *Executor) killProduct(p *rmm.Product) ([]int, error) {
	ps, err := e.procs()
	if err != nil {
		return nil, err
	}
	var targets []int
	for _, pr := range ps {
		if pr.Kernel || pr.Dead || e.isProtected(pr.PID) {
			continue
		}
		if m, _ := e.matcher.Process(pr.Comm, pr.Exe); m != nil && m.ID == p.ID {
			targets = append(targets, pr.PID)
		}
	}
	killed, errs := e.killAll(targets)
	return killed, errors.Join(errs...)
}

// foundProducts returns the catalog products running or installed on this
// host: a running process, an install path that exists, or a unit file
// (not one of our masks).
func (e *Executor) foundProducts() ([]*rmm.Product, error) {
	ps, err := e.procs()
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	for _, pr := range ps {
		if pr.Kernel || pr.Dead {
			continue
		}
		if m, _ := e.matcher.Process(pr.Comm, pr.Exe); m != nil {
			found[m.ID] = true
		}
	}
	dirs := append([]string{e.o.SystemdDir}, rmm.UnitDirs...)
	var out []*rmm.Product
	for i := range e.o.Catalog.Products {
		p := &e.o.Catalog.Products[i]
		oi := p.On(runtime.GOOS)
		if oi == nil {
			continue
		}
		hit := found[p.ID]
		for _, pa := range oi.Paths {
			if hit {
				break
			}
			if _, err := os.Lstat(strings.TrimSuffix(pa, "/")); err == nil {
				hit = true
			}
		}
		for _, s := range oi.Services {
			u, err := unitName(s)
			if hit || err != nil {
				continue
			}
			for _, d := range dirs {
				if installedUnit(filepath.Join(d, u)) {
					hit = true
					break
				}
			}
		}
		if hit {
			out = append(out, p)
		}
	}
	return out, nil
}

// installedUnit reports whether f is a unit file or a link to one (a mask
// pointing to /dev/null is not an installation).
func installedUnit(f string) bool {
	fi, err := os.Lstat(f)
	if err != nil {
		return false
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		t, err := os.Readlink(f)
		return err == nil && t != devNull
	}
	return fi.Mode().IsRegular()
}

// devNull is where a mask points.
const devNull = "/dev/null"

// enableRMM runs enable-rmm: it undoes exactly what disable-rmm recorded.
func (e *Executor) enableRMM(ctx context.Context, product string) Result {
	if !supportsServices {
		return unsupported(ActEnableRMM)
	}
	var ids []string
	if product == "*" {
		for id := range e.st.Disabled {
			ids = append(ids, id)
		}
		slices.Sort(ids)
	} else {
		id := product
		if e.o.Catalog != nil {
			if p, ok := e.o.Catalog.Product(product); ok {
				id = p.ID
			}
		}
		if _, ok := e.st.Disabled[id]; ok {
			ids = []string{id}
		}
	}
	if len(ids) == 0 {
		return result(StatusNoop, "enable-rmm: %s is not disabled", product)
	}
	var (
		affected, notes []string
		errs            []error
	)
	for _, id := range ids {
		rec := e.st.Disabled[id]
		a, n, err := e.unmaskServices(rec)
		affected, notes = append(affected, a...), append(notes, n...)
		if err != nil {
			// Still disabled, with the masks that remain recorded: a retry
			// picks up where this one stopped.
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		// Enabled before the services start, or the exec path would kill
		// the agent as it comes back.
		delete(e.st.Disabled, id)
		e.publishDisabled()
		affected = append(affected, "product:"+id)
		a, err = e.restartServices(ctx, rec)
		affected = append(affected, a...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	if err := e.save(); err != nil {
		errs = append(errs, err)
	}
	res := Result{Status: StatusOK, Affected: affected, Detail: fmt.Sprintf("enable-rmm: %s enabled (our masks removed", strings.Join(ids, ", "))}
	if e.systemdRunning() {
		res.Detail += ", units we disabled re-enabled and started)"
	} else {
		res.Detail += "; systemd not running: nothing started)"
	}
	if len(errs) > 0 {
		res.Status = StatusFailed
		res.Detail = fmt.Sprintf("enable-rmm: %s: %v", strings.Join(ids, ", "), errors.Join(errs...))
	}
	if len(notes) > 0 {
		res.Detail += "; " + strings.Join(notes, "; ")
	}
	return res
}
