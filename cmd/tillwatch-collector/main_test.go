package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the real tillwatch-collector once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tillwatch-collector-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "tillwatch-collector")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestBadConfigExits2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, yaml, key string
	}{
		{"invalid value", "listen: \"127.0.0.1:notaport\"\n", "listen"},
		{"unknown key", "heartbeat_intervall: 30s\n", "heartbeat_intervall"},
		{"bad type", "heartbeat_interval: soon\n", "heartbeat_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			if err := os.WriteFile(cfg, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := run(t, "run", "-c", cfg, "--data", filepath.Join(dir, "data"))
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tillwatch-collector: ") || !strings.Contains(stderr, tt.key) {
				t.Fatalf("stderr %q, want one line naming %s", stderr, tt.key)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, _, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "tillwatch-collector ") {
		t.Fatalf("version: %d %q", code, out)
	}
	out, _, code = run(t, "--help")
	if code != 0 || !strings.Contains(out, "token") || !strings.Contains(out, "run") {
		t.Fatalf("help: %d %q", code, out)
	}
}

// TestTokenCreateThenEnroll runs the real binary end to end: create an
// enrolment token, start the collector on a free port, enrol with the token
// through the real client pinning the generated ca.pem, then stop it with
// SIGTERM and expect a clean exit. It runs on SQLite and, with
// TILLWATCH_ES_URL, on Elasticsearch given by the flag: `token create`
// takes the same store flags as `run`.
func TestTokenCreateThenEnroll(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		tokenCreateThenEnroll(t, nil, []string{"tillwatch.db"})
	})
	t.Run("elasticsearch", func(t *testing.T) {
		t.Parallel()
		es := os.Getenv("TILLWATCH_ES_URL")
		if es == "" {
			t.Skip("TILLWATCH_ES_URL is not set (make es-up starts a node)")
		}
		tokenCreateThenEnroll(t, []string{"--elasticsearch", es}, nil)
	})
}

func tokenCreateThenEnroll(t *testing.T, storeFlags, files []string) {
	data := filepath.Join(t.TempDir(), "data")
	stdout, stderr, code := run(t, append([]string{"token", "create", "--role", "sensor", "--data", data}, storeFlags...)...)
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, stderr)
	}
	token := strings.TrimSuffix(stdout, "\n")
	if token == "" || strings.Contains(token, "\n") || strings.TrimSpace(token) != token {
		t.Fatalf("token create printed %q, want exactly one token line", stdout)
	}

	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	os.WriteFile(cfg, []byte("log:\n  format: json\n  level: debug\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), append([]string{"run", "-c", cfg, "--data", data, "--listen", "127.0.0.1:0"}, storeFlags...)...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// Wait for the start line, which names the real address and ca.pem.
	type startLine struct {
		Msg     string `json:"msg"`
		Addr    string `json:"addr"`
		DataDir string `json:"data_dir"`
		CAFile  string `json:"ca_file"`
	}
	lines := bufio.NewScanner(errPipe)
	var start startLine
	var logged []string
	for lines.Scan() {
		logged = append(logged, lines.Text())
		var l startLine
		if json.Unmarshal(lines.Bytes(), &l) == nil && l.Msg == "collector listening" {
			start = l
			break
		}
	}
	if start.Addr == "" {
		t.Fatalf("no start line; stderr:\n%s", strings.Join(logged, "\n"))
	}
	go io.Copy(io.Discard, errPipe) // keep the pipe drained
	if start.DataDir != data || start.CAFile != filepath.Join(data, "ca.pem") {
		t.Errorf("start line %+v", start)
	}

	c, err := client.New(client.Config{URL: "https://" + start.Addr, CAFile: start.CAFile, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	// A host id of its own: the Elasticsearch store outlives the test, and an
	// id bound to another run's host key would be refused (409).
	host := fmt.Sprintf("till-7-%d", time.Now().UnixNano())
	resp, err := c.Enroll(ctx, api.EnrollRequest{HostID: host, HostName: host, AgentVersion: "test", HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatalf("enrol with the printed token: %v", err)
	}
	if _, err := c.WithToken(resp.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "test"}); err != nil {
		t.Fatalf("heartbeat with the issued credential: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("collector did not exit cleanly on SIGTERM: %v", err)
	}
	for _, f := range append([]string{"ca.pem", "ca/ca.key", "server.pem", "server.key", "store"}, files...) {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
}

// TestTokenCreateRefusesAnotherStore: once run has used a data dir with one
// store, token create with that data dir and another store is refused with
// exit 2 and one line saying which flags to pass, and writes nothing.
func TestTokenCreateRefusesAnotherStore(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	other := filepath.Join(t.TempDir(), "other.db")
	// What run leaves behind after starting on Elasticsearch.
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "store"), []byte("elasticsearch:http://127.0.0.1:9200\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--data", data}, // default SQLite under the data dir
		{"--data", data, "--store", "sqlite:" + other}, // another SQLite file
		{"--data", data, "--elasticsearch", "http://127.0.0.1:1"},
	} {
		stdout, stderr, code := run(t, append([]string{"token", "create", "--role", "sensor"}, args...)...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "runs on elasticsearch:http://127.0.0.1:9200") {
			t.Errorf("token create %v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	for _, f := range []string{filepath.Join(data, "tillwatch.db"), other} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: created by a refused token create (%v)", f, err)
		}
	}
}
