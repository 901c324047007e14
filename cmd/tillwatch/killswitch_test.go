package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// ksEnv is a real collector with two enrolled tills and a responder token.
type ksEnv struct {
	coll     *collectortest.Collector
	tokFile  string
	analyst  string
	aliceKey string
	bobKey   string
}

func newKSEnv(t *testing.T) *ksEnv {
	t.Helper()
	coll := collectortest.Start(t, "", "")
	enrol := coll.Client(coll.Token(api.RoleSensor))
	for _, h := range []string{"till-A", "till-B"} {
		if _, err := enrol.Enroll(context.Background(), api.EnrollRequest{HostID: h, HostName: h, AgentVersion: "test", HostKey: "twhk_cli-killswitch-test-host-key-" + h}); err != nil {
			t.Fatal(err)
		}
	}
	tok := filepath.Join(t.TempDir(), "responder.token")
	if err := os.WriteFile(tok, []byte(coll.Token(api.RoleResponder)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &ksEnv{coll: coll, tokFile: tok, analyst: coll.Token(api.RoleAnalyst),
		aliceKey: coll.ResponderKeyFile("alice"), bobKey: coll.ResponderKeyFile("bob")}
}

// cli runs the tillwatch CLI against url/ca with stdin.
func (e *ksEnv) cli(t *testing.T, url, ca, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, w bytes.Buffer
	root := newRoot(&o, &w)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--collector", url, "--ca", ca, "--token", e.tokFile}, args...))
	err = root.ExecuteContext(context.Background())
	return o.String(), w.String(), err
}

func (e *ksEnv) command(t *testing.T, id string) api.CommandStatus {
	t.Helper()
	st, err := e.coll.Client(e.analyst).Command(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *ksEnv) newest(t *testing.T) api.Command {
	t.Helper()
	cmds, err := e.coll.Client(e.analyst).Commands(context.Background(), 1)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("newest command: %d, %v", len(cmds), err)
	}
	return cmds[0]
}

// compromisedCollector fronts the real collector like a compromised one
// would: every issue request is rewritten to target all hosts before the
// real collector sees it, and, when lie is set, the listing it answers
// with still says host:till-A. It serves TLS under its own CA, which the
// CLI is given (a compromised collector holds its TLS key).
func compromisedCollector(t *testing.T, real *collectortest.Collector, lie bool) (url, caFile string) {
	t.Helper()
	target, _ := neturl(real.URL)
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(real.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pemBytes)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: target.Hostname()}}
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		if r.Method == http.MethodPost && r.URL.Path == api.PathCommands {
			var req map[string]any
			b, _ := io.ReadAll(r.Body)
			if json.Unmarshal(b, &req) == nil {
				req["targets"] = map[string]any{"all": true}
				b, _ = json.Marshal(req)
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
			r.Header.Set("Content-Length", strconv.Itoa(len(b)))
		}
	}
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !lie || !strings.HasPrefix(resp.Request.URL.Path, api.PathCommands) {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		var st api.CommandStatus
		if json.Unmarshal(b, &st) == nil && st.Command.Targets == "all" {
			st.Command.Targets = "host:till-A"
			b, _ = json.Marshal(st)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	bundle, err := pki.Ensure(t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(proxy)
	srv.TLS = bundle.TLSConfig()
	// httptest adds its own certificate when Certificates is empty, and
	// crypto/tls prefers it to GetCertificate for a client without SNI.
	srv.TLS.Certificates = []tls.Certificate{*bundle.Current()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, bundle.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

func neturl(s string) (*url.URL, error) { return url.Parse(s) }

// TestCompromisedCollectorCannotWidenWhatRespondersSign: a collector that
// rewrites host:till-A to all gets no responder signature, whether it
// lies in the listing or not, through issue --sign-with, approve --yes
// with expectations, or an interactive approve where the responder sees
// "EVERY host" and declines.
func TestCompromisedCollectorCannotWidenWhatRespondersSign(t *testing.T) {
	t.Parallel()
	e := newKSEnv(t)
	for _, lie := range []bool{true, false} {
		url, ca := compromisedCollector(t, e.coll, lie)
		name := map[bool]string{true: "lying listing", false: "honest listing"}[lie]

		_, _, err := e.cli(t, url, ca, "", "killswitch", "issue", "--action", "isolate-host", "--target", "host:till-A", "--sign-with", e.aliceKey)
		if err == nil || !strings.Contains(err.Error(), "other than the one requested") {
			t.Fatalf("%s: issue --sign-with: %v, want refused as not what was requested", name, err)
		}
		rec := e.newest(t)
		if rec.Targets != "all" {
			t.Fatalf("%s: the proxy did not widen the command: %s", name, rec.Targets)
		}
		if st := e.command(t, rec.ID); len(st.Command.Signed.Signatures) != 0 || st.Command.State != store.CommandPendingApproval {
			t.Fatalf("%s: the fleet-wide command got %d signatures (%s)", name, len(st.Command.Signed.Signatures), st.Command.State)
		}

		_, _, err = e.cli(t, url, ca, "", "killswitch", "approve", rec.ID, "--sign-with", e.bobKey,
			"--yes", "--expect-action", "isolate-host", "--expect-target", "host:till-A")
		if err == nil || !strings.Contains(err.Error(), "not signing") {
			t.Fatalf("%s: approve --yes --expect-target host:till-A of a fleet-wide command: %v, want refused", name, err)
		}
		_, stderr, err := e.cli(t, url, ca, "no\n", "killswitch", "approve", rec.ID, "--sign-with", e.bobKey)
		if lie {
			if err == nil || !strings.Contains(err.Error(), "lists") {
				t.Fatalf("lying listing: interactive approve: %v, want refused as listing and payload differ", err)
			}
		} else {
			if err == nil || !strings.Contains(err.Error(), "not confirmed") || !strings.Contains(stderr, "EVERY host of the fleet (2 enrolled now") {
				t.Fatalf("honest listing: interactive approve answered no: %v; shown:\n%s", err, stderr)
			}
		}
		if st := e.command(t, rec.ID); len(st.Command.Signed.Signatures) != 0 {
			t.Fatalf("%s: a responder signed the widened command", name)
		}
	}
}

// TestRespondersSignWhatTheyAskedFor: against the honest collector the
// same flows sign, and what was shown is what was signed.
func TestRespondersSignWhatTheyAskedFor(t *testing.T) {
	t.Parallel()
	e := newKSEnv(t)
	url, ca := e.coll.URL, e.coll.CAFile

	stdout, stderr, err := e.cli(t, url, ca, "", "killswitch", "issue", "--action", "isolate-host", "--target", "host:till-A",
		"--reason", "ransom note on till-A", "--sign-with", e.aliceKey)
	if err != nil {
		t.Fatalf("issue --sign-with: %v\n%s", err, stderr)
	}
	id := strings.Fields(stdout)[0]
	if st := e.command(t, id); st.Command.State != store.CommandActive || len(st.Command.Signed.Signatures) != 1 {
		t.Fatalf("isolate-host on one till signed by alice: %s with %d signatures", st.Command.State, len(st.Command.Signed.Signatures))
	}
	if !strings.Contains(stderr, "1 named host(s): till-A") || !strings.Contains(stderr, `"ransom note on till-A"`) {
		t.Fatalf("issue did not show what it signed:\n%s", stderr)
	}

	stdout, _, err = e.cli(t, url, ca, "", "killswitch", "issue", "--action", "release-host", "--target", "host:till-A", "--ttl", "30m")
	if err != nil {
		t.Fatal(err)
	}
	id = strings.Fields(stdout)[0]
	if _, _, err := e.cli(t, url, ca, "", "killswitch", "approve", id, "--sign-with", e.aliceKey, "--yes"); err == nil {
		t.Fatal("--yes without expectations was accepted")
	}
	if _, _, err := e.cli(t, url, ca, "", "killswitch", "approve", id, "--sign-with", e.aliceKey,
		"--yes", "--expect-action", "release-host", "--expect-target", "till-A"); err != nil {
		t.Fatalf("approve --yes with matching expectations: %v", err)
	}
	stdout, stderr, err = e.cli(t, url, ca, "yes\n", "killswitch", "approve", id, "--sign-with", e.bobKey)
	if err != nil || !strings.Contains(stdout, id+" active") {
		t.Fatalf("interactive approve: %v, %q", err, stdout)
	}
	for _, want := range []string{"action:     release-host", "TTL 30m0s", "issuer:     responder:", "1 signature(s) so far, 2 responder(s) needed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("approve did not show %q:\n%s", want, stderr)
		}
	}
}

// TestPIDKillWithoutStartTimeRefusedByCLI: the CLI refuses a kill-process
// by pid alone before it reaches the collector.
func TestPIDKillWithoutStartTimeRefusedByCLI(t *testing.T) {
	t.Parallel()
	e := newKSEnv(t)
	_, _, err := e.cli(t, e.coll.URL, e.coll.CAFile, "", "killswitch", "issue", "--action", "kill-process", "--target", "till-A", "--param", "pid=4242")
	if err == nil || !strings.Contains(err.Error(), "start_time") {
		t.Fatalf("pid kill without start_time: %v", err)
	}
	cmds, err := e.coll.Client(e.analyst).Commands(context.Background(), 10)
	if err != nil || len(cmds) != 0 {
		t.Fatalf("the collector got %d commands (%v)", len(cmds), err)
	}
}

// FuzzSameAsRequested: whatever a collector answers an issue request with,
// the check never panics, and what it accepts has exactly the action,
// targets, params, reason and lifetime that were asked for.
func FuzzSameAsRequested(f *testing.F) {
	sent := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	want := killswitch.Command{V: killswitch.Version, Targets: killswitch.Targets{Hosts: []string{"till-A"}},
		Action: killswitch.ActionIsolateHost, Reason: "r"}
	good := want
	good.ID, good.Issuer, good.IssuedAt, good.NotBefore, good.NotAfter = "ks-1-abcdef", "responder:t1", sent, sent, sent.Add(time.Hour)
	p, _ := good.Canonical()
	f.Add(p, "host:till-A")
	wide := good
	wide.Targets = killswitch.Targets{All: true}
	p, _ = wide.Canonical()
	f.Add(p, "host:till-A")
	f.Add([]byte(`{"v":1}`), "all")
	f.Fuzz(func(t *testing.T, payload []byte, listed string) {
		got, _ := killswitch.ParseCanonical(payload) // the listing copies what it can read
		rec := api.Command{ID: got.ID, Action: got.Action, Targets: listed, Issuer: got.Issuer, Reason: got.Reason,
			Signed: killswitch.Signed{Payload: payload}}
		c, err := sameAsRequested(want, time.Hour, rec, sent)
		if err != nil {
			return
		}
		if c.Action != want.Action || !sameTargets(c.Targets, want.Targets) || len(c.Params) != 0 || c.Reason != want.Reason ||
			c.NotAfter.Sub(c.IssuedAt) != time.Hour || !c.NotBefore.Equal(c.IssuedAt) || listed != c.Targets.String() {
			t.Fatalf("accepted %q listed as %q", payload, listed)
		}
	})
}
