// Package demo runs tillwatch's demonstration on one machine: a collector on
// the embedded store, an enrolled sensor, and a simulated dropper that the
// sensor detects (and, as root, stops), with the alert shown as it arrives
// at the collector. It starts only processes it owns, talks only to
// loopback, writes only under its own temporary folders, and removes them.
package demo

import (
	"context"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/event"
)

// Options configure a demo run.
type Options struct {
	// BinDir holds tillwatch-collector and tillwatch-sensor.
	BinDir string
	// Keep leaves the collector and sensor running until ctx is cancelled.
	Keep bool
	Out  io.Writer
	// PrintAlerts renders alerts as `tillwatch alerts` does.
	PrintAlerts func(io.Writer, []map[string]any)
	// Timeout bounds each wait (default 30s).
	Timeout time.Duration
}

// RuleID is the rule the demo's dropper triggers.
const RuleID = "TW-EXEC-0001"

// HostID is the demo sensor's host id.
const HostID = "demo-till-001"

type run struct {
	shop   string
	o      Options
	work   string
	procs  []*exec.Cmd
	logs   []*os.File
	url    string
	cl     *client.Client
	ca     string
	analyt string
	// responder is the file holding responderTok, the console's token.
	responder, responderTok string
}

// Run performs the demo; it returns an error if any step fails, after
// stopping what it started.
func Run(ctx context.Context, o Options) (err error) {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	r := &run{o: o}
	r.work, err = os.MkdirTemp("", "tillwatch-demo-")
	if err != nil {
		return err
	}
	// The demo's sensor arms the kernel layer, whose pins outlive it by
	// design; a demo leaves none behind unless a deployed sensor had them.
	_, pinErr := os.Stat(kernel.DefaultPinDir)
	defer func() {
		r.stopAll()
		if os.IsNotExist(pinErr) {
			if err := kernel.Release(kernel.DefaultPinDir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
				r.say("could not remove the kernel layer's pins: %v (tillwatch-sensor kernel release)", err)
			}
		}
		if err == nil && !o.Keep {
			os.RemoveAll(r.work)
		} else {
			r.say("logs and data kept in %s", r.work)
		}
	}()
	steps := []struct {
		title string
		f     func(context.Context) error
	}{
		{"start a collector on the embedded store (SQLite)", r.startCollector},
		{"enrol a sensor watching a shop folder", r.startSensor},
		{"simulate an attack: a dropper runs a payload from shared memory", r.attack},
		{"simulate ransomware encrypting the shop's files", r.ransomware},
	}
	for i, s := range steps {
		r.say("\n[%d/%d] %s", i+1, len(steps), s.title)
		if err := s.f(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.title, err)
		}
	}
	r.nextSteps()
	if o.Keep {
		r.say("\nweb console: %s/console/\n  sign in with this responder token (valid 24h): %s\n  the browser warns about the certificate: it is signed by the demo collector's own CA (%s); accept it for this demo or import that CA.",
			r.url, r.responderTok, r.ca)
		r.say("\ncollector and sensor keep running; press Ctrl-C to stop them.")
		<-ctx.Done()
	}
	return nil
}

func (r *run) say(format string, a ...any) { fmt.Fprintf(r.o.Out, format+"\n", a...) }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start launches a binary of ours with its output in work/<name>.log.
func (r *run) start(name string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(r.work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(r.o.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w (run `make build` first)", name, err)
	}
	r.procs = append(r.procs, cmd)
	r.logs = append(r.logs, logf)
	return cmd, nil
}

// output runs a binary of ours to completion and returns its stdout.
func (r *run) output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.o.BinDir, name), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// stopAll stops our processes, newest first, with SIGTERM then SIGKILL.
func (r *run) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		cmd := r.procs[i]
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	for _, f := range r.logs {
		f.Close()
	}
	r.procs, r.logs = nil, nil
}

// waitFor polls cond until it returns true, an error, or the timeout.
func (r *run) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(r.o.Timeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if last != nil {
		return fmt.Errorf("timed out waiting for %s: %w", what, last)
	}
	return fmt.Errorf("timed out waiting for %s (logs in %s)", what, r.work)
}

func (r *run) startCollector(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	data := filepath.Join(r.work, "collector")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if _, err := r.start("tillwatch-collector", "run", "--data", data, "--listen", addr); err != nil {
		return err
	}
	r.url = "https://" + addr
	r.ca = filepath.Join(data, "ca.pem")
	if err := r.waitFor(ctx, "the collector's ca.pem", func(context.Context) (bool, error) {
		_, err := os.Stat(r.ca)
		return err == nil, err
	}); err != nil {
		return err
	}
	tok, err := r.output(ctx, "tillwatch-collector", "token", "create", "--role", "analyst", "--data", data)
	if err != nil {
		return err
	}
	r.analyt = filepath.Join(r.work, "analyst.token")
	if err := os.WriteFile(r.analyt, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	r.cl, err = client.New(client.Config{URL: r.url, CAFile: r.ca, Token: tok, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	if err := r.waitFor(ctx, "the collector API", func(ctx context.Context) (bool, error) {
		_, err := r.cl.Hosts(ctx)
		return err == nil, err
	}); err != nil {
		return err
	}
	r.say("      collector listening on %s, data in %s (TLS with its own CA: %s)", r.url, data, r.ca)
	// The web console signs in with a responder token: it sees the
	// kill-switch forms too.
	resp, err := r.output(ctx, "tillwatch-collector", "token", "create", "--role", "responder", "--ttl", "24h", "--data", data)
	if err != nil {
		return err
	}
	r.responderTok = resp
	r.responder = filepath.Join(r.work, "responder.token")
	if err := os.WriteFile(r.responder, []byte(resp+"\n"), 0o600); err != nil {
		return err
	}
	r.say("      web console at %s/console/ (sign in with the responder token in %s)", r.url, r.responder)
	return nil
}

func (r *run) startSensor(ctx context.Context) error {
	data := filepath.Join(r.work, "collector")
	tok, err := r.output(ctx, "tillwatch-collector", "token", "create", "--role", "sensor", "--data", data)
	if err != nil {
		return err
	}
	tokFile := filepath.Join(r.work, "enroll.token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	shop := filepath.Join(r.work, "shop")
	if err := makeShopFiles(shop); err != nil {
		return err
	}
	mode := "enforce"
	if os.Geteuid() != 0 {
		mode = "monitor"
		r.say("      not root: the sensor runs in monitor mode (it reports but does not stop). Run `sudo make demo` to see it stop the attack.")
	}
	_, err = r.start("tillwatch-sensor", "run",
		"--collector", r.url, "--ca", r.ca, "--enroll-token", tokFile,
		"--state-dir", filepath.Join(r.work, "sensor"), "--spool", filepath.Join(r.work, "sensor", "spool"),
		"--host-id", HostID, "--watch", shop, "--mode", mode,
		"--alerts-out", filepath.Join(r.work, "alerts.ndjson"), "--metrics-listen", "")
	if err != nil {
		return err
	}
	if err := r.waitFor(ctx, "the sensor to enrol", func(ctx context.Context) (bool, error) {
		hosts, err := r.cl.Hosts(ctx)
		for _, h := range hosts {
			if h.HostID == HostID {
				return true, nil
			}
		}
		return false, err
	}); err != nil {
		return err
	}
	r.shop = shop
	r.say("      sensor %s enrolled (mode %s), watching %s", HostID, mode, shop)
	// The process source snapshots running processes at start; give it a
	// moment so the payload's parent is in its table.
	time.Sleep(time.Second)
	return nil
}

// payloadDir is where the simulated dropper puts its payload: shared memory,
// where droppers put them to leave nothing on disk.
func payloadDir() (string, error) {
	base := "/dev/shm"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return "", errors.New("/dev/shm is not available on this machine")
	}
	return os.MkdirTemp(base, "tillwatch-demo-")
}

func (r *run) attack(ctx context.Context) error {
	dir, err := payloadDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The payload is a harmless copy of sleep(1), marked by its name.
	src, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	payload := filepath.Join(dir, "tillwatch-demo-payload")
	if err := copyFile(src, payload); err != nil {
		return err
	}
	cmd := exec.Command(payload, "120")
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run payload: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		// Whatever the sensor did, the demo leaves no payload running.
		_ = cmd.Process.Kill()
	}()
	r.say("      ran %s (pid %d)", payload, cmd.Process.Pid)

	var alerts []map[string]any
	if err := r.waitFor(ctx, "the alert at the collector", func(ctx context.Context) (bool, error) {
		alerts, err = r.cl.Alerts(ctx, client.AlertQuery{Since: started.Add(-time.Minute), HostID: HostID, RuleID: RuleID, Limit: 10})
		return len(alerts) > 0, err
	}); err != nil {
		return err
	}
	r.say("\nthe alert, as `tillwatch alerts` shows it at the collector:\n")
	r.o.PrintAlerts(r.o.Out, alerts)

	a := alerts[0]
	r.say("\n      rule:      %v (%v)", get(a, "rule.name"), get(a, "rule.id"))
	r.say("      ATT&CK:    %v", get(a, "threat.technique.id"))
	r.say("      process:   %v (pid %v), parent %v (pid %v)", get(a, "process.executable"), get(a, "process.pid"), get(a, "process.parent.name"), get(a, "process.parent.pid"))
	r.say("      sha256:    %v", get(a, "process.hash.sha256"))
	r.say("      response:  %v -> %v", get(a, "tillwatch.response.action"), get(a, "tillwatch.response.result"))

	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.say("\n      the payload was stopped by the sensor (%s) %s after it started.", ws.Signal(), time.Since(started).Round(time.Millisecond))
				return nil
			}
		}
		r.say("\n      the payload ended: %v", err)
	case <-time.After(3 * time.Second):
		if res, _ := get(a, "tillwatch.response.result").(string); res == event.ResultOK {
			return errors.New("the sensor reported the payload killed, but it still runs")
		}
		r.say("\n      the payload was not stopped (monitor mode); the demo stops it now.")
	}
	return nil
}

func get(doc map[string]any, path string) any {
	v, _ := event.Lookup(doc, path)
	return v
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (r *run) nextSteps() {
	env := fmt.Sprintf("TILLWATCH_COLLECTOR=%s TILLWATCH_CA=%s TILLWATCH_TOKEN=%s", r.url, r.ca, r.analyt)
	r.say(`
what to try next:
  - keep everything running and query it yourself:   ./bin/tillwatch demo --keep
    it prints the web console's address and a token to sign in with: stores, alerts, hosts, kill-switch
    then, in another terminal:
      %s ./bin/tillwatch alerts
      %s ./bin/tillwatch hosts --json
  - run the sensor standalone, alerts to the terminal:
      sudo ./bin/tillwatch-sensor run --no-collector --alerts-out - --state-dir /tmp/tw-state
    and run any program from /dev/shm in another terminal
  - with a sensor running, try the other simulators (each touches only the folder it is given, --undo reverts):
      sudo ./bin/tillwatch simulate ransomware --dir /some/test/folder --mode rename --workers 4
      sudo ./bin/tillwatch simulate rmm-chain --dir /some/test/folder
  - check what this machine supports:                sudo ./bin/tillwatch-sensor check
  - read docs/ARCHITECTURE.md and docs/operator.md`, env, env)
}
