package console

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
)

// roleTable is the API's table for the routes the console uses (the real
// one is server.RoleTable, which this package must not import).
var roleTable = map[string][]string{
	"GET " + api.PathHosts:           {api.RoleAnalyst, api.RoleResponder},
	"GET " + api.PathAlerts:          {api.RoleAnalyst, api.RoleResponder},
	"POST " + api.PathCommands:       {api.RoleResponder},
	"POST " + api.PathCommandApprove: {api.RoleResponder},
	"GET " + api.PathCommands:        {api.RoleAnalyst, api.RoleResponder},
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// apiEcho stands in for the collector's API behind the pass-through: it
// reports what it was called with, so the test sees what the console
// forwards (the real API is exercised by the browser tests).
func apiEcho(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{
		"path": r.URL.Path, "auth": r.Header.Get("Authorization"), "cookie": r.Header.Get("Cookie"),
	})
}

type fixture struct {
	con  *Console
	srv  *httptest.Server
	st   *sqlite.Store
	clk  *clock
	host string
	tok  map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "tw.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Now()}
	c, err := New(Options{Store: st, Roles: roleTable, Now: clk.now, IdleTimeout: 10 * time.Minute, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(c.Handler(http.HandlerFunc(apiEcho)))
	t.Cleanup(srv.Close)
	f := &fixture{con: c, srv: srv, st: st, clk: clk, host: strings.TrimPrefix(srv.URL, "https://"), tok: map[string]string{}}
	for _, role := range []string{api.RoleAnalyst, api.RoleResponder, api.RoleSensor} {
		tok, err := st.CreateToken(context.Background(), role, "", time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.tok[role] = tok
	}
	return f
}

// do sends a request the way the console page would (same origin), with
// the given extra headers.
func (f *fixture) do(t *testing.T, method, path, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Origin", f.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// signIn returns the session cookie and CSRF token for role.
func (f *fixture) signIn(t *testing.T, role string) (string, sessionInfo) {
	t.Helper()
	resp := f.do(t, http.MethodPost, "/console/session", `{"token":"`+f.tok[role]+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("sign-in as %s: %d %s", role, resp.StatusCode, b)
	}
	var info sessionInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			return ck.Name + "=" + ck.Value, info
		}
	}
	t.Fatal("no session cookie")
	return "", info
}

func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	resp := f.do(t, http.MethodPost, "/console/session", `{"token":"`+f.tok[api.RoleAnalyst]+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	raw := resp.Header.Get("Set-Cookie")
	for _, want := range []string{CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict", "Max-Age=3600"} {
		if !strings.Contains(raw, want) {
			t.Errorf("Set-Cookie %q lacks %q", raw, want)
		}
	}
	if strings.Contains(raw, f.tok[api.RoleAnalyst]) {
		t.Error("the cookie carries the token")
	}
	var info sessionInfo
	json.NewDecoder(resp.Body).Decode(&info)
	if info.Role != api.RoleAnalyst || len(info.CSRF) < 40 || info.CanIssue || info.CanApprove {
		t.Errorf("session info %+v", info)
	}
}

func TestSignInRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cases := []struct {
		name string
		body string
		hdr  map[string]string
		want int
	}{
		{"unknown token", `{"token":"tw_nope"}`, nil, http.StatusUnauthorized},
		{"not a token", `{"token":"hunter2"}`, nil, http.StatusUnauthorized},
		{"sensor role", `{"token":"` + f.tok[api.RoleSensor] + `"}`, nil, http.StatusForbidden},
		{"cross-site", `{"token":"` + f.tok[api.RoleAnalyst] + `"}`, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"other origin", `{"token":"` + f.tok[api.RoleAnalyst] + `"}`, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"form post", `token=x`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusForbidden},
		{"bad json", `{`, nil, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(t, http.MethodPost, "/console/session", tc.body, tc.hdr)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if resp.Header.Get("Set-Cookie") != "" && tc.want != http.StatusOK {
				t.Error("a refused sign-in set a cookie")
			}
		})
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cookie, info := f.signIn(t, api.RoleResponder)
	wrong := strings.Repeat("A", len(info.CSRF))
	cases := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no csrf token", map[string]string{"Cookie": cookie}, http.StatusForbidden},
		{"wrong csrf token", map[string]string{"Cookie": cookie, CSRFHeader: wrong}, http.StatusForbidden},
		{"cross-site with token", map[string]string{"Cookie": cookie, CSRFHeader: info.CSRF, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"other origin with token", map[string]string{"Cookie": cookie, CSRFHeader: info.CSRF, "Origin": "https://evil.example"}, http.StatusForbidden},
		{"no session", map[string]string{CSRFHeader: info.CSRF}, http.StatusUnauthorized},
		{"right token", map[string]string{"Cookie": cookie, CSRFHeader: info.CSRF}, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(t, http.MethodPost, "/console/api/v1/commands", `{}`, tc.hdr)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want != http.StatusOK {
				return
			}
			var got map[string]string
			json.NewDecoder(resp.Body).Decode(&got)
			if got["path"] != api.PathCommands || got["auth"] != "Bearer "+f.tok[api.RoleResponder] || got["cookie"] != "" {
				t.Errorf("the API was called with %v", got)
			}
		})
	}
}

func TestSessionExpiryAndLogout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cookie, info := f.signIn(t, api.RoleAnalyst)
	who := func() int {
		return f.do(t, http.MethodGet, "/console/session", "", map[string]string{"Cookie": cookie}).StatusCode
	}
	if got := who(); got != http.StatusOK {
		t.Fatalf("fresh session: %d", got)
	}
	f.clk.add(9 * time.Minute) // used within the idle timeout: stays
	if got := who(); got != http.StatusOK {
		t.Fatalf("after 9 idle minutes: %d", got)
	}
	f.clk.add(11 * time.Minute)
	if got := who(); got != http.StatusUnauthorized {
		t.Fatalf("after 11 idle minutes: %d, want 401", got)
	}

	cookie, info = f.signIn(t, api.RoleAnalyst)
	if r := f.do(t, http.MethodPost, "/console/logout", "", map[string]string{"Cookie": cookie}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without CSRF: %d, want 403", r.StatusCode)
	}
	r := f.do(t, http.MethodPost, "/console/logout", "", map[string]string{"Cookie": cookie, CSRFHeader: info.CSRF})
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d %q", r.StatusCode, r.Header.Get("Set-Cookie"))
	}
	if got := who(); got != http.StatusUnauthorized {
		t.Fatalf("after logout: %d, want 401", got)
	}
}

func TestMaxLifetime(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cookie, _ := f.signIn(t, api.RoleAnalyst)
	for range 7 { // keep it busy: 70 minutes of use, idle never reached
		f.clk.add(9 * time.Minute)
		f.do(t, http.MethodGet, "/console/session", "", map[string]string{"Cookie": cookie})
	}
	if got := f.do(t, http.MethodGet, "/console/session", "", map[string]string{"Cookie": cookie}).StatusCode; got != http.StatusUnauthorized {
		t.Fatalf("past the maximum lifetime: %d, want 401", got)
	}
}

func TestRevokedTokenEndsSession(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok, err := f.st.CreateToken(context.Background(), api.RoleAnalyst, "", time.Now().Add(2*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.tok["short"] = tok
	cookie, _ := f.signIn(t, "short")
	if got := f.do(t, http.MethodGet, "/console/data/stores", "", map[string]string{"Cookie": cookie}).StatusCode; got != http.StatusOK {
		t.Fatalf("stores: %d", got)
	}
	// The store's clock is the wall clock: wait for the token to lapse by
	// asking the store, bounded.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := f.st.Authenticate(context.Background(), tok); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("token did not expire")
		}
		time.Sleep(time.Second)
	}
	if got := f.do(t, http.MethodGet, "/console/data/stores", "", map[string]string{"Cookie": cookie}).StatusCode; got != http.StatusUnauthorized {
		t.Fatalf("stores after the token expired: %d, want 401", got)
	}
}

func TestSecurityHeadersAndRoles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, path := range []string{"/console/", "/console/static/app.js", "/console/static/style.css", "/console/session"} {
		resp := f.do(t, http.MethodGet, path, "", nil)
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", path, resp.Header)
		}
	}
	body, _ := io.ReadAll(f.do(t, http.MethodGet, "/console/", "", nil).Body)
	if strings.Contains(string(body), "<script>") || strings.Contains(string(body), "style=") {
		t.Error("index.html has inline script or style")
	}
	if got := f.do(t, http.MethodGet, "/console/static/../console.go", "", nil).StatusCode; got == http.StatusOK {
		t.Error("served a file outside the assets")
	}
	// A view whose API route no role of the session may call is refused.
	c, err := New(Options{Store: f.st, Roles: map[string][]string{"GET " + api.PathHosts: {api.RoleResponder}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(c.Handler(http.HandlerFunc(apiEcho)))
	defer srv.Close()
	g := &fixture{srv: srv, st: f.st, clk: f.clk, tok: f.tok}
	cookie, _ := g.signIn(t, api.RoleAnalyst)
	if got := g.do(t, http.MethodGet, "/console/data/stores", "", map[string]string{"Cookie": cookie}).StatusCode; got != http.StatusForbidden {
		t.Errorf("analyst on a responder-only view: %d, want 403", got)
	}
}
