package e2e

import (
	"errors"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// binDir holds the binaries built once for all tests of the package.
var binDir string

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "tillwatch-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/tillwatch", "./cmd/tillwatch-sensor", "./cmd/tillwatch-collector")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	// The sensors under test arm the kernel layer (kernel.mode auto) and its
	// pins outlive them by design; remove them unless they were there
	// before (a sensor deployed on this machine).
	_, pinErr := os.Stat(kernel.DefaultPinDir)
	code := m.Run()
	if os.IsNotExist(pinErr) {
		if err := kernel.Release(kernel.DefaultPinDir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			fmt.Fprintln(os.Stderr, "release kernel pins:", err)
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func bin(name string) string { return filepath.Join(binDir, name) }

// proc is a binary of ours running in the background, its output captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs a binary until the test ends (then SIGTERM, SIGKILL after 10s).
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin(name), args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.output())
		}
	})
	return p
}

// stop sends SIGTERM and waits (bounded); it returns the exit error.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a binary of ours to completion (bounded by 60s).
func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return result{so.String(), se.String(), code}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// sensorStart bounds a sensor's start until its process source runs. The
// first start on a machine loads the kernel layer, whose programs the
// kernel's verifier checks: 13-18 s on a busy 2-CPU VM (a restart that
// finds this build's pins skips it).
const sensorStart = 60 * time.Second

// eventually polls f until it returns true or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// collector is a running tillwatch-collector with tokens.
type collector struct {
	url, data, ca, addr string
	analystToken        string
	sensorToken         string
	p                   *proc
}

// startCollector runs tillwatch-collector with its data in data, listening
// on addr; extra arguments (e.g. "-c", FILE) follow.
func startCollector(t *testing.T, data, addr string, extra ...string) *collector {
	t.Helper()
	c := &collector{url: "https://" + addr, data: data, ca: filepath.Join(data, "ca.pem"), addr: addr}
	c.p = start(t, "tillwatch-collector", append([]string{"run", "--data", data, "--listen", addr}, extra...)...)
	eventually(t, 30*time.Second, "collector /healthz", func() bool {
		_, err := os.Stat(c.ca)
		if err != nil {
			return false
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return c
}

// tokenFile creates a token of role and writes it into dir.
func (c *collector) tokenFile(t *testing.T, role, dir string) string {
	t.Helper()
	r := run(t, "tillwatch-collector", "token", "create", "--role", role, "--data", c.data)
	if r.code != 0 {
		t.Fatalf("token create: %d %s", r.code, r.stderr)
	}
	f := filepath.Join(dir, role+".token")
	if err := os.WriteFile(f, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// cli runs the tillwatch CLI against c with the analyst token file.
func (c *collector) cli(t *testing.T, tokenFile string, args ...string) result {
	t.Helper()
	return run(t, "tillwatch", append(args, "--collector", c.url, "--ca", c.ca, "--token", tokenFile)...)
}

// jsonLines decodes NDJSON output.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON lines: %v: %q", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// get reads a dotted ECS path.
func get(doc map[string]any, path string) any {
	v, _ := event.Lookup(doc, path)
	return v
}

// payload copies sleep(1) into dir under a marked name and returns its path.
func payload(t *testing.T, dir string) string {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, "tillwatch-e2e-payload")
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// shmDir makes a directory under /dev/shm removed when the test ends.
func shmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "tillwatch-e2e-")
	if err != nil {
		t.Skipf("/dev/shm not usable here: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func pidOf(v any) int {
	f, _ := v.(float64)
	return int(f)
}

func itoa(i int) string { return strconv.Itoa(i) }
