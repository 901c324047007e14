package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const supportsServices = true

// systemctlPaths are the only places systemctl is taken from: never $PATH,
// which a compromised RMM agent may have changed.
var systemctlPaths = []string{"/usr/bin/systemctl", "/bin/systemctl", "/usr/sbin/systemctl", "/sbin/systemctl"}

const systemctlTimeout = 30 * time.Second

// systemdRunning reports whether systemd is the running init (the test
// systemd itself uses, sd_booted).
func (e *Executor) systemdRunning() bool {
	fi, err := os.Stat(e.systemdRun)
	return err == nil && fi.IsDir()
}

// systemctl runs systemctl with a fixed argv; unit names reaching here
// matched unitPattern, and "--" ends option parsing anyway.
func (e *Executor) systemctl(ctx context.Context, args ...string) error {
	bin := e.systemctlBin
	for _, p := range systemctlPaths {
		if bin != "" {
			break
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			bin = p
		}
	}
	if bin == "" {
		return errors.New("systemd runs but systemctl was not found in /usr/bin, /bin, /usr/sbin or /sbin")
	}
	ctx, cancel := context.WithTimeout(ctx, systemctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// disableServices disables, masks and stops the units of one product, and
// records in rec what it changed. Masks are written whether or not systemd
// runs: they keep the agent down even when the sensor is dead.
func (e *Executor) disableServices(ctx context.Context, units []string, rec *disabledProduct) (affected, notes []string, err error) {
	running := e.systemdRunning()
	var errs, stopErrs []error
	var active []string
	masked := false
	for _, u := range units {
		if running {
			if e.systemctl(ctx, "is-active", "--quiet", "--", u) == nil {
				active = append(active, u)
			}
			if e.systemctl(ctx, "is-enabled", "--quiet", "--", u) == nil {
				if err := e.systemctl(ctx, "disable", "--", u); err != nil {
					errs = append(errs, err)
				} else {
					rec.SystemdDisabled = appendNew(rec.SystemdDisabled, u)
					affected = append(affected, "unit-disabled:"+u)
				}
			}
		}
		m, note, err := e.mask(u)
		if err != nil {
			errs = append(errs, err)
		}
		if note != "" {
			notes = append(notes, note)
		}
		if m != nil {
			rec.Masks = append(rec.Masks, *m)
			affected = append(affected, "mask:"+filepath.Join(e.o.SystemdDir, u))
			masked = true
		}
	}
	if running && masked {
		if err := e.systemctl(ctx, "daemon-reload"); err != nil {
			errs = append(errs, err)
		}
	}
	// Stopped after the mask, so Restart= cannot bring the unit back.
	for _, u := range active {
		if err := e.systemctl(ctx, "stop", "--", u); err != nil {
			stopErrs = append(stopErrs, err)
			continue
		}
		rec.SystemdStopped = appendNew(rec.SystemdStopped, u)
		affected = append(affected, "unit-stopped:"+u)
	}
	return affected, notes, errors.Join(append(errs, stopErrs...)...)
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// mask writes SystemdDir/unit -> /dev/null, which is what `systemctl mask`
// does. A unit file there is never touched (reported in note); a symlink
// elsewhere is replaced and remembered; an existing mask is left as the
// administrator's. It returns the record of a mask it wrote, or nil.
func (e *Executor) mask(unit string) (*maskRecord, string, error) {
	if err := os.MkdirAll(e.o.SystemdDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("mask %s: %w", unit, err)
	}
	f := filepath.Join(e.o.SystemdDir, unit)
	fi, err := os.Lstat(f)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Symlink(devNull, f); err != nil {
			return nil, "", fmt.Errorf("mask %s: %w", unit, err)
		}
		return &maskRecord{Unit: unit}, "", syncDir(e.o.SystemdDir)
	case err != nil:
		return nil, "", fmt.Errorf("mask %s: %w", unit, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(f)
		if err != nil {
			return nil, "", fmt.Errorf("mask %s: %w", unit, err)
		}
		if t == devNull {
			return nil, "", nil // masked already (by us earlier, or by an administrator)
		}
		if err := replaceSymlink(f, devNull); err != nil {
			return nil, "", fmt.Errorf("mask %s: %w", unit, err)
		}
		return &maskRecord{Unit: unit, PrevTarget: t}, "", nil
	case fi.Mode().IsRegular():
		return nil, fmt.Sprintf("%s is a unit file: left in place, not masked", f), nil
	default:
		return nil, fmt.Sprintf("%s is neither a file nor a symlink: left in place, not masked", f), nil
	}
}

// replaceSymlink points f at target atomically (new link, then rename).
func replaceSymlink(f, target string) error {
	tmp := filepath.Join(filepath.Dir(f), ".tillwatch-"+filepath.Base(f))
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, f); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(f))
}

// unmaskServices removes the masks recorded in rec (restoring a replaced
// symlink); a mask that is no longer ours (changed or removed by someone
// else) is left alone and dropped from the record. rec.Masks keeps the
// masks that could not be removed.
func (e *Executor) unmaskServices(rec *disabledProduct) (affected, notes []string, err error) {
	var errs []error
	var left []maskRecord
	for _, m := range rec.Masks {
		f := filepath.Join(e.o.SystemdDir, m.Unit)
		fi, lerr := os.Lstat(f)
		if lerr != nil {
			if !errors.Is(lerr, fs.ErrNotExist) {
				errs = append(errs, lerr)
				left = append(left, m)
			}
			continue
		}
		t, rerr := os.Readlink(f)
		if fi.Mode()&fs.ModeSymlink == 0 || rerr != nil || t != devNull {
			notes = append(notes, f+" changed since it was masked: left alone")
			continue
		}
		if m.PrevTarget != "" {
			rerr = replaceSymlink(f, m.PrevTarget)
		} else if rerr = os.Remove(f); rerr == nil {
			rerr = syncDir(e.o.SystemdDir)
		}
		if rerr != nil {
			errs = append(errs, fmt.Errorf("unmask %s: %w", m.Unit, rerr))
			left = append(left, m)
			continue
		}
		affected = append(affected, "unmask:"+f)
	}
	rec.Masks = left
	if len(affected) > 0 && e.systemdRunning() {
		if err := e.systemctl(context.Background(), "daemon-reload"); err != nil {
			errs = append(errs, err)
		}
	}
	return affected, notes, errors.Join(errs...)
}

// restartServices re-enables the units we disabled and starts the ones we
// stopped, when systemd runs.
func (e *Executor) restartServices(ctx context.Context, rec *disabledProduct) ([]string, error) {
	if !e.systemdRunning() {
		return nil, nil
	}
	var affected []string
	var errs []error
	for _, u := range rec.SystemdDisabled {
		if err := e.systemctl(ctx, "enable", "--", u); err != nil {
			errs = append(errs, err)
			continue
		}
		affected = append(affected, "unit-enabled:"+u)
	}
	for _, u := range rec.SystemdStopped {
		if err := e.systemctl(ctx, "start", "--", u); err != nil {
			errs = append(errs, err)
			continue
		}
		affected = append(affected, "unit-started:"+u)
	}
	return affected, errors.Join(errs...)
}
