package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// ScreenshotsEnv names a folder: when set, the browser tests save a PNG of
// each page there (docs/ keeps the ones docs/console.md shows).
const ScreenshotsEnv = "TILLWATCH_SCREENSHOTS"

// browser starts a fresh headless Chromium for the test (its own profile,
// no network but loopback) or skips when there is none.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("no chromium on PATH: `apt-get install -y chromium` to run the console's browser tests (CI installs it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		// The collector's certificate is signed by its own CA, made for
		// this test; nothing but loopback is ever loaded.
		chromedp.IgnoreCertErrors,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// till is a simulated sensor speaking the real protocol: enrolled with
// labels, sending heartbeats and alerts, long-polling for kill-switch
// commands, verifying them against the keys it pinned at enrolment and
// acknowledging them.
type till struct {
	id     string
	c      *client.Client
	keys   *killswitch.KeySet
	labels map[string]string
	mu     sync.Mutex
	acks   []string // actions acknowledged
}

type collector interface {
	Token(role string) string
	Client(tok string) *client.Client
	ResponderPubFile(name string) string
}

func enrolTill(t *testing.T, ctx context.Context, col collector, url, caFile, id string, labels map[string]string) *till {
	t.Helper()
	resp, err := col.Client(col.Token(api.RoleSensor)).Enroll(ctx, api.EnrollRequest{
		HostID: id, HostName: id, AgentVersion: "1.4.0-test", OS: "linux", Labels: labels,
		HostKey: "twhk_console-browser-test-host-key-" + id})
	if err != nil {
		t.Fatalf("enrol %s: %v", id, err)
	}
	keys := resp.CommandKeys
	// A till pins the responders' public keys from its configuration
	// (--killswitch-key); reversing actions need their signatures.
	for _, name := range collectortest.Responders {
		pub, err := killswitch.LoadPublicKey(col.ResponderPubFile(name))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: name})
	}
	ks, err := killswitch.NewKeySet(keys...)
	if err != nil {
		t.Fatal(err)
	}
	tl := &till{id: id, c: col.Client(resp.Credential), keys: ks, labels: labels}
	return tl
}

func (tl *till) heartbeat(t *testing.T, ctx context.Context, health map[string]string) {
	t.Helper()
	if _, err := tl.c.Heartbeat(ctx, api.Heartbeat{HostID: tl.id, AgentVersion: "1.4.0-test", Mode: "enforce", Health: health, SentAt: time.Now().UTC()}); err != nil {
		t.Fatalf("heartbeat %s: %v", tl.id, err)
	}
}

func (tl *till) send(t *testing.T, ctx context.Context, evs ...event.Event) {
	t.Helper()
	var b strings.Builder
	for i := range evs {
		line, err := json.Marshal(&evs[i])
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	// As a sensor does: a busy store answers 503 or 429 ("retry the
	// batch"), and the batch is sent again after a pause, within a bound.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := tl.c.SendEvents(ctx, []byte(b.String()))
		var he *client.HTTPError
		if err == nil {
			return
		}
		if !errors.As(err, &he) || (he.StatusCode != http.StatusServiceUnavailable && he.StatusCode != http.StatusTooManyRequests) ||
			time.Now().After(deadline) {
			t.Fatalf("send from %s: %v", tl.id, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("send from %s: %v", tl.id, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// obey runs the till's command loop until ctx ends.
func (tl *till) obey(ctx context.Context) {
	v := &killswitch.Verifier{Keys: tl.keys, HostID: tl.id, Labels: tl.labels}
	for ctx.Err() == nil {
		cmds, err := tl.c.PendingCommands(ctx, 2*time.Second)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		for i := range cmds {
			cmd, _, verr := v.Verify(&cmds[i])
			res := killswitch.Result{Status: killswitch.StatusOK, Detail: "simulated till: " + cmd.Action}
			if verr != nil {
				if c, err := killswitch.ParseCanonical(cmds[i].Payload); err == nil {
					cmd.ID, cmd.Action = c.ID, c.Action
				}
				re, _ := killswitch.IsRefused(verr)
				res = killswitch.Result{Status: killswitch.StatusRefused, Refusal: re.Reason, Detail: re.Detail}
			}
			if err := tl.c.AckCommand(ctx, cmd.ID, res); err != nil {
				continue // asked again on the next poll (at-least-once)
			} else {
				tl.mu.Lock()
				tl.acks = append(tl.acks, cmd.Action)
				tl.mu.Unlock()
			}
		}
	}
}

// rmmAttack is the alert a till raises when its RMM agent starts a shell
// that decodes and runs a payload, as in the Kaseya incident; stopped says
// whether the sensor killed the payload (enforce) or only reported it.
func rmmAttack(host string, stopped bool) event.Event {
	now := time.Now().UTC()
	resp := &event.Response{Action: event.ActionKill, Result: event.ResultOK, Target: "pid 4242"}
	if !stopped {
		resp = &event.Response{Action: event.ActionNone, Result: event.ResultOK}
	}
	return event.Event{
		Timestamp: now, ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"},
			Action: "exec", Severity: 73, RiskScore: 73, Dataset: event.DatasetAlerts},
		Rule: &event.Rule{ID: "TW-RMM-0003", Name: "RMM agent started a decoder", Ruleset: event.RulesetRMM,
			Description: "A remote-management agent ran a shell that decoded and started a payload."},
		Threat: &event.Threat{Framework: "MITRE ATT&CK",
			Technique: event.Technique{ID: []string{"T1219", "T1140"}, Name: []string{"Remote Access Software", "Deobfuscate/Decode Files or Information"}},
			Tactic:    &event.Tactic{ID: []string{"TA0011"}, Name: []string{"Command and Control"}}},
		Host:  event.Host{ID: host, Name: host},
		Agent: event.Agent{ID: host, Type: event.AgentType, Version: "1.4.0-test"},
		Process: &event.Process{PID: 4242, Name: "agent.bin", Executable: "/tmp/.kworker/agent.bin",
			CommandLine: "/tmp/.kworker/agent.bin --silent", Hash: &event.Hash{SHA256: strings.Repeat("ab", 32)},
			Parent: &event.ParentProcess{PID: 4241, Name: "base64", Executable: "/usr/bin/base64", CommandLine: "base64 -d /tmp/x.b64"}},
		Tillwatch: &event.Tillwatch{Mode: "enforce", Response: resp,
			Process: &event.ProcessContext{Ancestry: []event.Ancestor{
				{PID: 4241, Name: "base64", Executable: "/usr/bin/base64", CommandLine: "base64 -d /tmp/x.b64", Exited: true},
				{PID: 4240, Name: "sh", Executable: "/bin/sh", CommandLine: "sh -c 'base64 -d /tmp/x.b64 > agent.bin; ./agent.bin'"},
				{PID: 4200, Name: "agentmon", Executable: "/opt/kaseya/agentmon", CommandLine: "/opt/kaseya/agentmon -d"},
				{PID: 1, Name: "systemd", Executable: "/usr/lib/systemd/systemd"},
			}},
			RMM: &event.RMM{Product: "kaseya-vsa", ProductName: "Kaseya VSA", AgentPID: 4200, AgentExe: "/opt/kaseya/agentmon", Behaviour: "decode"},
		},
	}
}

// healthChange is the event a sensor's health tracker sends when a
// component changes state (sensor/pipeline).
func healthChange(host, component, state, reason string, at time.Time) event.Event {
	ev := event.Event{
		Timestamp: at, ECS: event.ECS{Version: event.ECSVersion}, Message: component + " " + state + ": " + reason,
		Event: event.Meta{Kind: event.KindState, ID: event.NewID(), Category: []string{"host"}, Type: []string{"info"},
			Action: "health-" + state, Dataset: event.DatasetHealth, Reason: reason},
		Host:      event.Host{ID: host, Name: host},
		Agent:     event.Agent{ID: host, Type: event.AgentType, Version: "1.4.0-test"},
		Tillwatch: &event.Tillwatch{Health: &event.Health{Component: component, State: state}},
	}
	if state != event.HealthOK {
		ev.Error = &event.Error{Message: reason}
	}
	return ev
}

// shot saves a screenshot when ScreenshotsEnv is set.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv(ScreenshotsEnv)
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitJS polls a JavaScript predicate in the page, bounded.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, body)
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// submit submits a form as pressing its button does (form.submit() would
// skip the page's handler).
func submit(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`document.querySelector('` + sel + `').requestSubmit()`)
}

func signIn(t *testing.T, ctx context.Context, base, tok string) {
	t.Helper()
	do(t, ctx, "open the console", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	// Enter in the token field submits, as for any form.
	do(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#token"), tok), enter("#token"))
	waitJS(t, ctx, "signed in", `document.getElementById('who').textContent.startsWith('Signed in')`)
}

func signOut(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign out", chromedp.Click(chromedp.CSS("#logout")))
	waitJS(t, ctx, "signed out", `!document.getElementById('signin').hidden`)
}

func TestBrowserSQLite(t *testing.T) {
	ctx := browser(t)
	col := collectortest.Start(t, "", "")
	runConsole(t, ctx, col, col.URL, col.CAFile, col.ResponderKeyFile, true)
}

func TestBrowserElasticsearch(t *testing.T) {
	esURL := os.Getenv("TILLWATCH_ES_URL")
	if esURL == "" {
		t.Skip("TILLWATCH_ES_URL not set: run `make es-up` and export TILLWATCH_ES_URL=http://127.0.0.1:9200 (make test does both)")
	}
	ctx := browser(t)
	col := collectortest.StartElasticsearch(t, elasticsearch.Options{URL: esURL})
	runConsole(t, ctx, col, col.URL, col.CAFile, col.ResponderKeyFile, false)
}

// runConsole is the console as a person uses it, against a real collector
// with enrolled simulated tills.
func runConsole(t *testing.T, ctx context.Context, col collector, base, caFile string, keyFile func(string) string, screenshots bool) {
	if !screenshots {
		t.Setenv(ScreenshotsEnv, "")
	}
	bg, stop := context.WithCancel(context.Background())
	defer stop()
	tills := map[string]*till{}
	layout := []struct{ id, store string }{
		{"till-0042-1", "0042"}, {"till-0042-2", "0042"}, {"till-0042-3", "0042"},
		{"till-0043-1", "0043"}, {"till-0043-2", "0043"}, {"till-0044-1", "0044"},
	}
	var wg sync.WaitGroup
	for _, l := range layout {
		tl := enrolTill(t, bg, col, base, caFile, l.id, map[string]string{"store": l.store, "region": "north"})
		tl.heartbeat(t, bg, map[string]string{"process": "ok", "fileactivity": "ok"})
		tills[l.id] = tl
		wg.Add(1)
		go func() { defer wg.Done(); tl.obey(bg) }()
	}
	defer wg.Wait()
	defer stop()
	// The attack: stopped on one till, only reported on another; a third
	// till's file monitor is degraded.
	attack := rmmAttack("till-0042-1", true)
	tills["till-0042-1"].send(t, bg, attack)
	tills["till-0043-1"].send(t, bg, rmmAttack("till-0043-1", false))
	tills["till-0043-2"].heartbeat(t, bg, map[string]string{"process": "ok", "fileactivity": "degraded"})
	// The same till's health changes, as its sensor sends them.
	now := time.Now().UTC()
	tills["till-0043-2"].send(t, bg,
		healthChange("till-0043-2", "fileactivity", "degraded", "fanotify queue overflowed", now.Add(-2*time.Minute)),
		healthChange("till-0043-2", "fileactivity", "ok", "fanotify queue drained", now.Add(-time.Minute)))
	tills["till-0042-3"].send(t, bg,
		healthChange("till-0042-3", "process", "degraded", "exec events lost: ring buffer full", now.Add(-3*time.Minute)),
		healthChange("till-0042-3", "process", "ok", "exec events flowing again", now.Add(-2*time.Minute)))

	responder, analyst := col.Token(api.RoleResponder), col.Token(api.RoleAnalyst)

	t.Run("sign in", func(t *testing.T) {
		do(t, ctx, "open the console", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.CSS("#token")))
		shot(t, ctx, "signin")
		if evalJS[bool](t, ctx, `document.getElementById('nav').getClientRects().length > 0`) {
			t.Error("the console's pages are offered before sign-in")
		}
		accessible(t, ctx, "sign-in")
		do(t, ctx, "wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "tw_wrong"), enter("#token"))
		waitJS(t, ctx, "refusal shown", `document.getElementById('signin-error').textContent.includes('unknown')`)
		do(t, ctx, "clear", chromedp.Clear(chromedp.CSS("#token")))
		signIn(t, ctx, base, responder)
		cookies := evalJS[string](t, ctx, `document.cookie`)
		if strings.Contains(cookies, "tillwatch") {
			t.Errorf("the session cookie is readable by script: %q", cookies)
		}
	})

	tillState := func(id string) string {
		return `(document.querySelector('a.till[data-host="` + id + `"]')||{}).dataset`
	}
	t.Run("stores page shows the states", func(t *testing.T) {
		do(t, ctx, "stores", chromedp.Navigate(base+"/console/#/stores"))
		want := map[string]string{
			"till-0042-1": "attack-stopped", "till-0043-1": "alerting", "till-0043-2": "degraded",
			"till-0042-2": "protected", "till-0042-3": "protected", "till-0044-1": "protected",
		}
		for id, st := range want {
			waitJS(t, ctx, id+" is "+st, tillState(id)+`?.state === '`+st+`'`)
		}
		got := evalJS[string](t, ctx, `[...document.querySelectorAll('#summary .count')].map(e => e.dataset.state + '=' + e.querySelector('strong').textContent).join(' ')`)
		for _, w := range []string{"alerting=1", "attack-stopped=1", "degraded=1", "protected=3", "silenced=0"} {
			if !strings.Contains(got, w) {
				t.Errorf("counts %q lack %q", got, w)
			}
		}
		// Store 0043 needs attention most: it comes first.
		if first := evalJS[string](t, ctx, `document.querySelector('#groups section h2').firstChild.textContent`); first != "0043" {
			t.Errorf("first store %q, want 0043", first)
		}
		shot(t, ctx, "stores")
		// Filter by state.
		accessible(t, ctx, "stores")
		// Filter by state (Enter in the form submits it).
		do(t, ctx, "filter alerting", chromedp.SetValue(chromedp.CSS("#f-state"), "alerting"), enter("#f-value"))
		waitJS(t, ctx, "only the alerting till", `document.querySelectorAll('a.till').length === 1 && !!document.querySelector('a.till[data-host="till-0043-1"]')`)
		do(t, ctx, "clear filter", chromedp.SetValue(chromedp.CSS("#f-state"), ""), enter("#f-value"))
		waitJS(t, ctx, "all tills", `document.querySelectorAll('a.till').length === 6`)
		// The page refreshes itself without taking the keyboard's place.
		keepsFocus(t, ctx, "stores", `a.till[data-host="till-0043-1"]`)
		do(t, ctx, "tablet", chromedp.EmulateViewport(viewports[1][0], viewports[1][1]))
		shot(t, ctx, "stores-tablet")
		do(t, ctx, "laptop", chromedp.EmulateViewport(viewports[0][0], viewports[0][1]))
	})

	t.Run("alert page draws the process tree", func(t *testing.T) {
		do(t, ctx, "alerts", chromedp.Navigate(base+"/console/#/alerts"))
		waitJS(t, ctx, "two alerts listed", `document.querySelectorAll('#alerts-table tbody tr').length === 2`)
		do(t, ctx, "filter by store", chromedp.SendKeys(chromedp.CSS("#a-store"), "0042"), enter("#a-store"))
		waitJS(t, ctx, "one alert in store 0042", `document.querySelectorAll('#alerts-table tbody tr').length === 1`)
		shot(t, ctx, "alerts")
		accessible(t, ctx, "alerts")
		do(t, ctx, "open the alert", chromedp.Click(chromedp.CSS("#alerts-table tbody tr a")))
		waitJS(t, ctx, "process tree", `!!document.querySelector('#process-tree')`)
		chain := evalJS[[]string](t, ctx, `[...document.querySelectorAll('#process-tree .proc > .pname')].map(e => e.textContent.trim())`)
		wantChain := []string{"systemd", "agentmon", "sh", "base64", "agent.bin"}
		if strings.Join(chain, ">") != strings.Join(wantChain, ">") {
			t.Errorf("process tree %v, want %v", chain, wantChain)
		}
		// Nested: each process is a child of the one before.
		if depth := evalJS[int](t, ctx, `(() => { let n = document.querySelector('#process-tree .proc.self'), d = 0; while (n && n.id !== 'process-tree') { if (n.tagName === 'UL') d++; n = n.parentElement; } return d; })()`); depth != 5 {
			t.Errorf("the alerted process is %d lists deep, want 5", depth)
		}
		text := evalJS[string](t, ctx, `document.getElementById('page').innerText`)
		for _, w := range []string{"RMM agent: Kaseya VSA", "T1219 Remote Access Software", "kill → ok", "TW-RMM-0003"} {
			if !strings.Contains(text, w) {
				t.Errorf("alert page lacks %q", w)
			}
		}
		shot(t, ctx, "alert")
		accessible(t, ctx, "alert")
		do(t, ctx, "to the host", chromedp.Click(chromedp.CSS("#alert-host")))
		waitJS(t, ctx, "host page", `document.getElementById('page-title').textContent === 'Host till-0042-1'`)
		waitJS(t, ctx, "timeline has the alert", `[...document.querySelectorAll('#timeline li')].some(li => li.textContent.includes('TW-RMM-0003'))`)
	})

	t.Run("host timeline has health changes", func(t *testing.T) {
		do(t, ctx, "host", chromedp.Navigate(base+"/console/#/host/till-0043-2"))
		waitJS(t, ctx, "health entries",
			`[...document.querySelectorAll('#timeline li.tl-health')].map(li => li.dataset.status + ' ' + li.textContent).join('|').includes('degraded')`)
		got := evalJS[[]string](t, ctx, `[...document.querySelectorAll('#timeline li.tl-health')].map(li => li.dataset.status + ': ' + li.textContent.replace(/^.*?health\s*/, ''))`)
		want := []string{"ok: fileactivity ok: fanotify queue drained", "degraded: fileactivity degraded: fanotify queue overflowed"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("health on the timeline %q, want %q (newest first)", got, want)
		}
		if ok := evalJS[bool](t, ctx, `document.querySelector('#timeline li.tl-health[data-status="degraded"]').classList.contains('bad')`); !ok {
			t.Error("the degraded entry is not marked")
		}
		accessible(t, ctx, "host")
	})

	var disableID string
	t.Run("responder issues disable-rmm and sees the acknowledgements", func(t *testing.T) {
		do(t, ctx, "kill-switch", chromedp.Navigate(base+"/console/#/killswitch"))
		waitJS(t, ctx, "issue form", `!!document.getElementById('issue-form')`)
		do(t, ctx, "fill the form",
			chromedp.SetValue(chromedp.CSS("#k-action"), "disable-rmm"),
			chromedp.SetValue(chromedp.CSS("#k-target-kind"), "labels"),
			chromedp.SendKeys(chromedp.CSS("#k-target"), "store=0042"),
			chromedp.SendKeys(chromedp.CSS("#k-reason"), "Kaseya VSA pushing a decoder to store 0042"),
		)
		accessible(t, ctx, "kill-switch")
		// The form says before issuing that a token alone orders nothing
		// that acts: the responder will sign it with their key.
		if note := evalJS[string](t, ctx, `document.getElementById('issue-note').textContent`); !strings.Contains(note, "you will sign it with your key") {
			t.Errorf("issue form note for disable-rmm %q does not say the issuer signs", note)
		}
		shot(t, ctx, "killswitch")
		do(t, ctx, "issue with Enter", enter("#k-reason"))
		// A token alone cannot get disable-rmm signed: the command waits,
		// and its page opens with the issuer's signing step.
		waitJS(t, ctx, "signing step for the issuer",
			`document.getElementById('page-title').textContent.startsWith('Command ') && document.getElementById('approve')?.dataset.step === 'issuer' && !!document.getElementById('approve-btn')`)
		disableID = strings.TrimPrefix(evalJS[string](t, ctx, `document.getElementById('page-title').textContent`), "Command ")
		if acked := evalJS[int](t, ctx, `[...document.querySelectorAll('#acks-table tbody tr')].filter(r => r.children[1].textContent === 'acked').length`); acked != 0 {
			t.Fatalf("%d tills acknowledged a disable-rmm nobody signed", acked)
		}
		shown := evalJS[string](t, ctx, `document.getElementById('to-sign').textContent`)
		for _, w := range []string{`"action": "disable-rmm"`, `"store": "0042"`, `"ttl_minutes": 60`, disableID} {
			if !strings.Contains(shown, w) {
				t.Errorf("what will be signed %q lacks %q", shown, w)
			}
		}
		if lead := evalJS[string](t, ctx, `document.getElementById('approvals').textContent`); !strings.Contains(lead, "waiting for your signature: 0 of 1") {
			t.Errorf("the issuer is not asked for their signature: %q", lead)
		}
		accessible(t, ctx, "command, signing step")
		do(t, ctx, "pick alice's key", chromedp.SetUploadFiles(chromedp.CSS("#key-file"), []string{keyFile("alice")}))
		do(t, ctx, "show the key field", chromedp.Evaluate[chromedp.Void](`document.getElementById('approve-btn').scrollIntoView({block: 'center'})`))
		shot(t, ctx, "sign")
		do(t, ctx, "sign as alice", chromedp.Click(chromedp.CSS("#approve-btn")))
		waitJS(t, ctx, "three tills acknowledged ok",
			`[...document.querySelectorAll('#acks-table tbody tr')].filter(r => r.children[1].textContent === 'acked' && r.children[4].textContent === 'ok').length === 3`)
		if sigs := evalJS[string](t, ctx, `document.getElementById('approvals').dataset.signatures`); sigs != "1" {
			t.Errorf("active disable-rmm carries %s signatures, want alice's 1", sigs)
		}
		if n := evalJS[int](t, ctx, `document.querySelectorAll('#approve-btn').length`); n != 0 {
			t.Error("an active command still offers signing")
		}
		shot(t, ctx, "command")
		keepsFocus(t, ctx, "command", `#acks-table a[href="#/host/till-0042-1"]`)
		do(t, ctx, "stores", chromedp.Navigate(base+"/console/#/stores"))
		waitJS(t, ctx, "till-0042-3 shows RMM disabled", tillState("till-0042-3")+`?.state === 'rmm-disabled'`)
		waitJS(t, ctx, "till-0042-1 still attack stopped, RMM disabled too",
			tillState("till-0042-1")+`?.state === 'attack-stopped' && document.querySelector('a.till[data-host="till-0042-1"] .till-more').textContent.includes('RMM disabled')`)
	})

	t.Run("enable-rmm: the issuer signs, a second responder approves in the browser", func(t *testing.T) {
		do(t, ctx, "kill-switch", chromedp.Navigate(base+"/console/#/killswitch"))
		waitJS(t, ctx, "issue form", `!!document.getElementById('issue-form')`)
		do(t, ctx, "fill the form",
			chromedp.SetValue(chromedp.CSS("#k-action"), "enable-rmm"),
			chromedp.SetValue(chromedp.CSS("#k-target-kind"), "hosts"),
			chromedp.SendKeys(chromedp.CSS("#k-target"), "till-0042-3"),
			chromedp.SendKeys(chromedp.CSS("#k-reason"), "till-0042-3 clean; vendor patched"))
		if note := evalJS[string](t, ctx, `document.getElementById('issue-note').textContent`); !strings.Contains(note, "you will sign it with your key") || !strings.Contains(note, "second responder") {
			t.Errorf("issue form note for enable-rmm %q does not say the issuer signs and a second responder approves", note)
		}
		do(t, ctx, "issue", submit("#issue-form"))
		waitJS(t, ctx, "waiting for approval, the issuer's signing step shown",
			`document.getElementById('page').innerText.includes('waiting for approval') && document.getElementById('approve')?.dataset.step === 'issuer' && !!document.getElementById('approve-btn')`)
		id := strings.TrimPrefix(evalJS[string](t, ctx, `document.getElementById('page-title').textContent`), "Command ")
		if acked := evalJS[int](t, ctx, `[...document.querySelectorAll('#acks-table tbody tr')].filter(r => r.children[1].textContent === 'acked').length`); acked != 0 {
			t.Fatalf("%d tills acknowledged a command still waiting for approval", acked)
		}
		shown := evalJS[string](t, ctx, `document.getElementById('to-sign').textContent`)
		for _, w := range []string{`"action": "enable-rmm"`, `"till-0042-3"`, `"ttl_minutes": 60`, id} {
			if !strings.Contains(shown, w) {
				t.Errorf("what will be signed %q lacks %q", shown, w)
			}
		}
		if cli := evalJS[string](t, ctx, `document.getElementById('cli-line').textContent`); !strings.Contains(cli, "tillwatch killswitch approve "+id) {
			t.Errorf("CLI line %q", cli)
		}
		// First responder: alice, who issued it, signs in the browser.
		do(t, ctx, "pick alice's key", chromedp.SetUploadFiles(chromedp.CSS("#key-file"), []string{keyFile("alice")}))
		do(t, ctx, "sign as alice", chromedp.Click(chromedp.CSS("#approve-btn")))
		waitJS(t, ctx, "one signature recorded, still waiting for a second responder",
			`document.getElementById('approvals')?.dataset.signatures === '1' && document.getElementById('approve')?.dataset.step === 'approver' && !!document.getElementById('approve-btn')`)
		if acked := evalJS[int](t, ctx, `[...document.querySelectorAll('#acks-table tbody tr')].filter(r => r.children[1].textContent === 'acked').length`); acked != 0 {
			t.Fatalf("%d tills acknowledged an enable-rmm with one responder's signature", acked)
		}
		// Second responder: bob, in the browser.
		do(t, ctx, "reload", chromedp.Navigate(base+"/console/#/command/"+id), chromedp.Reload())
		waitJS(t, ctx, "approve button", `!!document.getElementById('approve-btn')`)
		do(t, ctx, "pick bob's key", chromedp.SetUploadFiles(chromedp.CSS("#key-file"), []string{keyFile("bob")}))
		shot(t, ctx, "approve")
		do(t, ctx, "approve as bob", chromedp.Click(chromedp.CSS("#approve-btn")))
		waitJS(t, ctx, "active and acknowledged",
			`document.getElementById('page').innerText.includes('active') && [...document.querySelectorAll('#acks-table tbody tr')].some(r => r.children[1].textContent === 'acked' && r.children[4].textContent === 'ok')`)
		do(t, ctx, "stores", chromedp.Navigate(base+"/console/#/stores"))
		waitJS(t, ctx, "till-0042-3 protected again", tillState("till-0042-3")+`?.state === 'protected'`)
		waitJS(t, ctx, "till-0042-2 still RMM disabled", tillState("till-0042-2")+`?.state === 'rmm-disabled'`)
	})

	t.Run("host timeline has commands and acknowledgements", func(t *testing.T) {
		do(t, ctx, "host", chromedp.Navigate(base+"/console/#/host/till-0042-3"))
		waitJS(t, ctx, "timeline", `document.querySelectorAll('#timeline li.tl-ack').length === 2 && document.querySelectorAll('#timeline li.tl-command').length === 2 &&
			document.querySelectorAll('#timeline li.tl-health').length === 2`)
		text := evalJS[string](t, ctx, `document.getElementById('page').innerText`)
		for _, w := range []string{"store=0042", "1.4.0-test", "enforce", "fileactivity: ok"} {
			if !strings.Contains(text, w) {
				t.Errorf("host page lacks %q", w)
			}
		}
		shot(t, ctx, "host")
		if !strings.Contains(text, disableID) && evalJS[int](t, ctx, `document.querySelectorAll('#timeline a[href="#/command/`+disableID+`"]').length`) != 2 {
			t.Errorf("the host timeline does not link command %s", disableID)
		}
	})

	t.Run("analyst sees no issue form and forged posts are refused", func(t *testing.T) {
		signOut(t, ctx)
		signIn(t, ctx, base, analyst)
		do(t, ctx, "kill-switch", chromedp.Navigate(base+"/console/#/killswitch"))
		waitJS(t, ctx, "commands listed", `document.querySelectorAll('#commands-table tbody tr').length === 2`)
		if n := evalJS[int](t, ctx, `document.querySelectorAll('#issue-form').length`); n != 0 {
			t.Error("an analyst sees the issue form")
		}
		// Even with the right CSRF token, the API's role table refuses.
		status := evalJS[int](t, ctx, `(async () => {
			const s = await (await fetch('/console/session')).json();
			const r = await fetch('/console/api/v1/commands', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
				body: JSON.stringify({action: 'disable-rmm', targets: {all: true}, reason: 'analyst'})});
			return r.status; })()`)
		if status != http.StatusForbidden {
			t.Errorf("analyst issuing through the console: %d, want 403", status)
		}
		signOut(t, ctx)
		signIn(t, ctx, base, responder)
		for name, hdr := range map[string]string{"no CSRF token": `{}`, "wrong CSRF token": `{'X-CSRF-Token': 'x'.repeat(43)}`} {
			status := evalJS[int](t, ctx, `(async () => {
				const r = await fetch('/console/api/v1/commands', {method: 'POST', headers: Object.assign({'Content-Type': 'application/json'}, `+hdr+`),
					body: JSON.stringify({action: 'disable-rmm', targets: {all: true}, reason: 'forged'})});
				return r.status; })()`)
			if status != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", name, status)
			}
		}
		// A page on another origin posts a form at the console; the signed-in
		// responder's browser sends it (SameSite does not stop it: same site,
		// other port), the console refuses it.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<form id="f" method="POST" action="%s/console/api/v1/commands" enctype="text/plain">
<input name='{"action":"disable-rmm","targets":{"all":true},"reason":"x","pad":"' value='"}'><button id="go">go</button></form>`, base)
		}))
		defer evil.Close()
		do(t, ctx, "visit the other site", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("#go")), chromedp.Click(chromedp.CSS("#go")))
		// Chromium keeps the Strict cookie off a request from an http page
		// (schemes make sites differ), so the console sees no session; a
		// page on https would be refused for its origin and missing token.
		refused := false
		for deadline := time.Now().Add(30 * time.Second); !refused && time.Now().Before(deadline); {
			// Errors while the page navigates are expected: ask again.
			text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + ' ' + document.body.innerText`))
			refused = err == nil && strings.Contains(text, "/console/api/v1/commands") &&
				(strings.Contains(text, "not signed in") || strings.Contains(text, "CSRF"))
			if !refused {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !refused {
			t.Error("the forged form post was not answered with a refusal")
		}
		cmds, err := col.Client(responder).Commands(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(cmds) != 2 {
			t.Errorf("%d commands stored, want 2: a forged request got through", len(cmds))
		}
	})
}
