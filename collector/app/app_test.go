package app

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/cli"
)

func TestExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("listen: nowhere\nlog:\n  level: loud\n"), 0o600)
	typoCfg := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typoCfg, []byte("data_dri: /x\n"), 0o600)
	esCfg := filepath.Join(dir, "es.yaml")
	// Port 1 on loopback: nothing listens, so the cluster is dead.
	os.WriteFile(esCfg, []byte("elasticsearch: http://127.0.0.1:1\n"), 0o600)
	tests := []struct {
		name    string
		args    []string
		code    int
		stderr  string // substring
		stdoutN int    // lines on stdout, -1 = don't care
	}{
		{"help", []string{"--help"}, 0, "", -1},
		{"version", []string{"version"}, 0, "", 1},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command", 0},
		{"unknown flag", []string{"run", "--nope"}, 2, "unknown flag: --nope", 0},
		{"bad config", []string{"run", "-c", badCfg}, 2, "listen:", 0},
		{"config typo", []string{"run", "-c", typoCfg}, 2, "data_dri", 0},
		{"missing config", []string{"run", "-c", filepath.Join(dir, "nope.yaml")}, 2, "no such file", 0},
		{"elasticsearch dead (flag)", []string{"run", "--data", dir, "--elasticsearch", "http://127.0.0.1:1"}, 1, "elasticsearch http://127.0.0.1:1 does not answer", 0},
		{"elasticsearch dead (config)", []string{"run", "--data", filepath.Join(dir, "es"), "-c", esCfg}, 1, "does not answer", 0},
		{"elasticsearch bad url", []string{"run", "--elasticsearch", "127.0.0.1:9200"}, 2, "elasticsearch:", 0},
		{"store and es", []string{"run", "--store", "sqlite:x.db", "--elasticsearch", "http://x:9200"}, 2, "none of the others can be", 0},
		{"bad store", []string{"run", "--store", "mysql://x"}, 2, "store:", 0},
		{"token no role", []string{"token", "create", "--data", dir}, 2, "--role is required", 0},
		{"token agent role", []string{"token", "create", "--role", "agent", "--data", dir}, 2, "issued at enrolment", 0},
		{"token ok", []string{"token", "create", "--role", "analyst", "--data", dir}, 0, "", 1},
		// Own data dirs: parallel first opens of one new database race on
		// its migration.
		{"token ttl ok", []string{"token", "create", "--role", "sensor", "--ttl", "24h", "--data", filepath.Join(dir, "t1")}, 0, "", 1},
		{"token ttl days", []string{"token", "create", "--role", "responder", "--ttl", "7d", "--data", filepath.Join(dir, "t2")}, 0, "", 1},
		{"token ttl minimum", []string{"token", "create", "--role", "analyst", "--ttl", "1m", "--data", filepath.Join(dir, "t3")}, 0, "", 1},
		{"token ttl 5y", []string{"token", "create", "--role", "sensor", "--ttl", "5y", "--data", filepath.Join(dir, "t4")}, 0, "", 1},
		{"token ttl zero", []string{"token", "create", "--role", "sensor", "--ttl", "0", "--data", dir}, 2, "must be positive", 0},
		{"token ttl negative", []string{"token", "create", "--role", "sensor", "--ttl", "-1h", "--data", dir}, 2, "must be positive", 0},
		{"token ttl negative days", []string{"token", "create", "--role", "sensor", "--ttl", "-3d", "--data", dir}, 2, "must be positive", 0},
		{"token ttl empty", []string{"token", "create", "--role", "sensor", "--ttl", "", "--data", dir}, 2, "not a duration", 0},
		{"token ttl garbage", []string{"token", "create", "--role", "sensor", "--ttl", "soon", "--data", dir}, 2, "not a duration", 0},
		{"token ttl no unit", []string{"token", "create", "--role", "sensor", "--ttl", "30", "--data", dir}, 2, "not a duration", 0},
		{"token ttl too short", []string{"token", "create", "--role", "sensor", "--ttl", "59s", "--data", dir}, 2, "minimum of 1m", 0},
		{"token ttl too long", []string{"token", "create", "--role", "sensor", "--ttl", "5y1h", "--data", dir}, 2, "not a duration", 0},
		{"token ttl too long hours", []string{"token", "create", "--role", "sensor", "--ttl", "43831h", "--data", dir}, 2, "maximum of 5y", 0},
		{"token ttl too long days", []string{"token", "create", "--role", "sensor", "--ttl", "1827d", "--data", dir}, 2, "maximum of 5y", 0},
		{"token ttl huge", []string{"token", "create", "--role", "sensor", "--ttl", "1e300d", "--data", dir}, 2, "not a duration", 0},
		{"token ttl huge years", []string{"token", "create", "--role", "sensor", "--ttl", "99999999999999999999y", "--data", dir}, 2, "maximum of 5y", 0},
		{"listen in use", []string{"run", "--data", filepath.Join(dir, "d2"), "--listen", "256.1.1.1:1"}, 1, "listen on 256.1.1.1:1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			err := Execute(context.Background(), tt.args, &out, &errb)
			if code := cli.ExitCode(err); code != tt.code {
				t.Fatalf("exit %d (%v), want %d", code, err, tt.code)
			}
			if tt.stderr != "" && (err == nil || !strings.Contains(err.Error(), tt.stderr)) {
				t.Errorf("error %v, want it to contain %q", err, tt.stderr)
			}
			if tt.stdoutN >= 0 {
				if n := strings.Count(out.String(), "\n"); n != tt.stdoutN {
					t.Errorf("stdout has %d lines, want %d: %q", n, tt.stdoutN, out.String())
				}
			}
		})
	}
}

func TestMainPrintsOneLine(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("listen: x\ndata_dir: \"\"\nheartbeat_interval: 1s\n"), 0o600)
	var out, errb bytes.Buffer
	code := Main([]string{"run", "-c", cfg}, &out, &errb)
	if code != 2 {
		t.Fatalf("exit %d", code)
	}
	s := errb.String()
	if strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "tillwatch-collector: ") {
		t.Fatalf("stderr %q, want one line starting with the binary name", s)
	}
	for _, key := range []string{"listen:", "data_dir:", "heartbeat_interval:"} {
		if !strings.Contains(s, key) {
			t.Errorf("stderr %q does not name %s", s, key)
		}
	}
}

// TestTokenTTLExpires checks --ttl reaches the store: the token works now
// and is refused as expired once its lifetime has passed.
func TestTokenTTLExpires(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	create := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := Execute(ctx, append([]string{"token", "create", "--data", dir}, args...), &out, &errb); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	day := create("--role", "sensor", "--ttl", "1d")
	never := create("--role", "analyst")
	// The store's credential cache reads the clock from a goroutine of
	// its own: the offset is shared with it.
	var offset atomic.Int64
	st, err := sqlite.Open(filepath.Join(dir, config.DBFile), sqlite.Options{Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tok := range []string{day, never} {
		if _, _, err := st.Authenticate(ctx, tok); err != nil {
			t.Fatalf("Authenticate now: %v", err)
		}
	}
	offset.Store(int64(24*time.Hour + time.Minute))
	if _, _, err := st.Authenticate(ctx, day); !errors.Is(err, store.ErrTokenExpired) {
		t.Errorf("Authenticate(--ttl 1d token) a day later = %v, want ErrTokenExpired", err)
	}
	if _, _, err := st.Authenticate(ctx, never); err != nil {
		t.Errorf("Authenticate(token without --ttl) a day later = %v", err)
	}
}

// TestTokenDefaultsListAndRevoke: tokens expire by default (sensor 7d and
// 100 uses, analyst 90d), --ttl never opts out, `token list` shows them
// without secrets and `token revoke ID` stops one at once.
func TestTokenDefaultsListAndRevoke(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := Execute(ctx, append(args, "--data", dir), &out, &errb); err != nil {
			t.Fatalf("%v: %v (%s)", args, err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	fleet := run("token", "create", "--role", "sensor")
	analyst := run("token", "create", "--role", "analyst")
	forever := run("token", "create", "--role", "responder", "--ttl", "never")
	hostTok := run("token", "create", "--role", "sensor", "--host", "till-9")

	st, err := sqlite.Open(filepath.Join(dir, config.DBFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	byID := map[string]store.TokenInfo{}
	ts, err := st.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range ts {
		byID[ti.ID] = ti
	}
	id := func(tok string) string { return store.TokenID(store.HashToken(tok)) }
	near := func(got time.Time, d time.Duration) bool { return got.Sub(time.Now().Add(d)).Abs() < time.Minute }
	if f := byID[id(fleet)]; !near(f.ExpiresAt, DefaultEnrolTTL) || f.MaxUses != DefaultEnrolUses {
		t.Errorf("fleet token %+v: want 7d and %d uses", f, DefaultEnrolUses)
	}
	if a := byID[id(analyst)]; !near(a.ExpiresAt, DefaultUserTTL) {
		t.Errorf("analyst token %+v: want 90d", a)
	}
	if r := byID[id(forever)]; !r.ExpiresAt.IsZero() {
		t.Errorf("--ttl never token %+v expires", r)
	}
	if h := byID[id(hostTok)]; h.HostID != "till-9" || h.MaxUses != 1 {
		t.Errorf("host token %+v: want till-9, one use", h)
	}

	list := run("token", "list")
	for _, tok := range []string{fleet, analyst, forever, hostTok} {
		if !strings.Contains(list, id(tok)) || strings.Contains(list, tok) || strings.Contains(list, store.HashToken(tok)) {
			t.Fatalf("list must show id %s and never the secret or its hash:\n%s", id(tok), list)
		}
	}
	if !strings.Contains(list, "0/100") || !strings.Contains(list, "never") {
		t.Errorf("list lacks uses or expiry:\n%s", list)
	}
	run("token", "revoke", id(analyst))
	if _, _, err := st.Authenticate(ctx, analyst); !errors.Is(err, store.ErrUnknownToken) {
		t.Fatalf("revoked token still authenticates: %v", err)
	}
	if !strings.Contains(run("token", "list"), "revoked") {
		t.Error("list does not show the revocation")
	}
	var out, errb bytes.Buffer
	if err := Execute(ctx, []string{"token", "revoke", "0123456789ab", "--data", dir}, &out, &errb); err == nil {
		t.Error("revoking an unknown id succeeded")
	}
	if err := Execute(ctx, []string{"token", "revoke", "../etc", "--data", dir}, &out, &errb); err == nil {
		t.Error("revoking a malformed id succeeded")
	}
}
