package demo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/collector/client"
)

// makeShopFiles fills the shop folder with the kind of files a till keeps:
// daily receipts and price lists, in a few folders.
func makeShopFiles(shop string) error {
	for _, dir := range []string{"receipts", "prices", "reports"} {
		if err := os.MkdirAll(filepath.Join(shop, dir), 0o755); err != nil {
			return err
		}
		for day := 1; day <= 20; day++ {
			var b strings.Builder
			fmt.Fprintf(&b, "store,till,date,item,qty,price\n")
			for line := range 40 {
				fmt.Fprintf(&b, "0042,3,2026-11-%02d,item-%03d,%d,%d.%02d\n", day, line, 1+line%5, 1+line%17, line*7%100)
			}
			name := filepath.Join(shop, dir, fmt.Sprintf("%s-2026-11-%02d.csv", dir, day))
			if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// snapshot maps each regular file under dir (the simulator's and the
// sensor's own bookkeeping excluded) to its sha256.
func snapshot(dir string) (map[string][32]byte, error) {
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = sha256.Sum256(raw)
		return nil
	})
	return out, err
}

// ransomware runs the simulator on the shop folder and shows what the
// sensor did about it, then undoes the simulation.
func (r *run) ransomware(ctx context.Context) error {
	before, err := snapshot(r.shop)
	if err != nil {
		return err
	}
	started := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(r.o.BinDir, "tillwatch"), "simulate", "ransomware", "--dir", r.shop, "--mode", "rename", "--workers", "2")
	out, err := cmd.CombinedOutput()
	stopped := killedBySignal(err)
	elapsed := time.Since(started).Round(time.Millisecond)
	after, err := snapshot(r.shop)
	if err != nil {
		return err
	}
	lost := 0
	for p, sum := range before {
		if now, ok := after[p]; !ok || now != sum {
			lost++
		}
	}
	r.say("      ran `tillwatch simulate ransomware --dir %s --mode rename --workers 2` on %d files", r.shop, len(before))
	if stopped {
		r.say("      the encryptor was stopped after %s; files changed or gone: %d of %d", elapsed, lost, len(before))
	} else {
		r.say("      the encryptor finished (%s): %s; files changed or gone: %d of %d", elapsed, strings.TrimSpace(string(out)), lost, len(before))
	}

	var alerts []map[string]any
	_ = r.waitFor(ctx, "the ransomware alert at the collector", func(ctx context.Context) (bool, error) {
		all, err := r.cl.Alerts(ctx, client.AlertQuery{Since: started.Add(-time.Minute), HostID: HostID, Limit: 100})
		alerts = alerts[:0]
		for _, a := range all {
			if get(a, "rule.ruleset") == "ransomware" {
				alerts = append(alerts, a)
			}
		}
		return len(alerts) > 0, err
	})
	if len(alerts) > 0 {
		r.say("\nthe ransomware alert at the collector:\n")
		r.o.PrintAlerts(r.o.Out, alerts[:1])
		r.say("\n      files affected: %v", get(alerts[0], "tillwatch.files_affected"))
	} else {
		r.say("      no ransomware alert reached the collector (see the sensor's log in %s)", r.work)
	}

	if err := r.undo(ctx); err != nil {
		return err
	}
	restored, err := snapshot(r.shop)
	if err != nil {
		return err
	}
	for p, sum := range before {
		if restored[p] != sum {
			return fmt.Errorf("undo left %s different from before the simulation", p)
		}
	}
	r.say("      `--undo` restored every file.")
	if !stopped && os.Geteuid() == 0 {
		return errors.New("the sensor did not stop the simulated ransomware")
	}
	return nil
}

// undo runs the simulator's --undo. A decoy the encryptor renamed away is
// put back by the sensor a moment later; an undo that recreates it first is
// a write to a decoy and is stopped like any other (seen once in CI). The
// undo is idempotent, so a stopped one is run again after the sensor has
// had time to restore its decoys.
func (r *run) undo(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, filepath.Join(r.o.BinDir, "tillwatch"), "simulate", "ransomware", "--dir", r.shop, "--undo")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if !killedBySignal(err) || attempt == 3 {
			return fmt.Errorf("undo the simulation: %v: %s", err, out)
		}
		r.say("      the sensor stopped the undo too (it wrote a decoy the sensor was still restoring); running it again")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// killedBySignal reports whether err is a process's exit by a signal.
func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}
