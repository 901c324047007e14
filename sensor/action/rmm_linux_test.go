package action

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tillwatch/tillwatch/sensor/response"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// fakeRMM is a catalog product installed under a temp dir.
type fakeRMM struct {
	id, proc, unit, fileUnit, linkUnit string
	install                            string // install directory (catalog path)
	catalog                            *rmm.Catalog
}

// newFakeRMM builds a one-product catalog (plus a second product, only
// installed, for disable-rmm *) from YAML, the way rules/rmm is loaded.
func newFakeRMM(t *testing.T) *fakeRMM {
	t.Helper()
	tag := randHex(t, 4)
	f := &fakeRMM{
		id: "fake-rmm-" + tag, proc: "fkrmm" + tag, install: filepath.Join(t.TempDir(), "opt", "fakermm"),
		unit: "fkrmm-" + tag, fileUnit: "fkrmm-" + tag + "-helper", linkUnit: "fkrmm-" + tag + "-linked",
	}
	if err := os.MkdirAll(f.install, 0o755); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`products:
  - id: %s
    name: Fake RMM %s
    vendor: tillwatch tests
    kind: rmm
    linux:
      processes: [%s]
      paths: [%s/]
      services: [%s, %s, %s]
  - id: fake-idle-%s
    name: Fake idle RMM
    kind: remote-access
    linux:
      paths: [%s/idle/]
`, f.id, tag, f.proc, f.install, f.unit, f.fileUnit, f.linkUnit, tag, f.install)
	c, err := rmm.LoadCatalog(fstest.MapFS{"rmm/catalog.yaml": {Data: []byte(y)}}, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	f.catalog = c
	return f
}

func TestDisableAndEnableRMM(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	f := newFakeRMM(t)
	state, sysd := t.TempDir(), t.TempDir()
	// A real unit file in SystemdDir must never be touched; a symlink to a
	// unit elsewhere is replaced by the mask and put back on enable.
	fileUnit := filepath.Join(sysd, f.fileUnit+".service")
	if err := os.WriteFile(fileUnit, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	linkUnit := filepath.Join(sysd, f.linkUnit+".service")
	if err := os.Symlink("/lib/systemd/system/elsewhere.service", linkUnit); err != nil {
		t.Fatal(err)
	}

	// The agent (a copy of sh named like the product's process) with a
	// child, and a helper recognised by its install path only.
	agentBin := filepath.Join(f.install, f.proc)
	copyBinary(t, "/bin/sh", agentBin, nil)
	helperBin := filepath.Join(f.install, "helper-"+randHex(t, 3))
	copyBinary(t, "/bin/sleep", helperBin, nil)
	agent := start(t, agentBin, "-c", "sleep 30 & wait")
	helper := start(t, helperBin, "30")
	var tree []int
	waitFor(t, "the agent's child", func() bool {
		tree, _ = response.Descendants("/proc", agent.pid)
		return len(tree) >= 2
	})
	bystander := start(t, "/bin/sleep", "30")

	opts := Options{StateDir: state, SystemdDir: sysd, Catalog: f.catalog, Approved: []string{f.id}}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	run := func(action, product string) Result {
		return e.Run(context.Background(), Request{CommandID: "cmd-" + action, Action: action, Params: map[string]string{"product": product}})
	}

	res := run(ActDisableRMM, f.id)
	t.Logf("disable-rmm: %+v", res)
	if res.Status != StatusOK {
		t.Fatalf("disable-rmm: %+v", res)
	}
	agent.killedBySIGKILL(t)
	helper.killedBySIGKILL(t)
	for _, p := range tree[1:] {
		waitDead(t, p)
	}
	for _, want := range []string{"product:" + f.id, "pid:" + strconv.Itoa(agent.pid), "pid:" + strconv.Itoa(helper.pid),
		"pid:" + strconv.Itoa(tree[1]), "mask:" + filepath.Join(sysd, f.unit+".service"), "mask:" + linkUnit} {
		if !slices.Contains(res.Affected, want) {
			t.Errorf("disable-rmm affected %v lacks %s", res.Affected, want)
		}
	}
	if !strings.Contains(res.Detail, fileUnit+" is a unit file: left in place") || !strings.Contains(res.Detail, "approved product") {
		t.Errorf("detail does not report the unit file left alone and the approved product: %s", res.Detail)
	}
	if !bystander.alive(t) {
		t.Fatal("a process of no product was killed")
	}
	for _, u := range []string{filepath.Join(sysd, f.unit+".service"), linkUnit} {
		if tgt, err := os.Readlink(u); err != nil || tgt != "/dev/null" {
			t.Errorf("%s -> %q, %v; want a mask to /dev/null", u, tgt, err)
		}
	}
	checkUnitFile := func() {
		t.Helper()
		b, err := os.ReadFile(fileUnit)
		if fi, lerr := os.Lstat(fileUnit); err != nil || lerr != nil || !fi.Mode().IsRegular() || !strings.HasPrefix(string(b), "[Service]") {
			t.Fatalf("the real unit file was touched: %q, %v", b, err)
		}
	}
	checkUnitFile()

	// Persisted: a new executor (a restarted sensor) still knows.
	raw, err := os.ReadFile(filepath.Join(state, "action", StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st persisted
	if err := json.Unmarshal(raw, &st); err != nil || st.Disabled[f.id] == nil || len(st.Disabled[f.id].Masks) != 2 {
		t.Fatalf("persisted state %s, %v", raw, err)
	}
	if fi, _ := os.Stat(filepath.Join(state, "action", StateFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode())
	}
	e.Close()
	e2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if p, ok := e2.DisabledProduct(agentBin, "x"); !ok || p != f.id {
		t.Errorf("after restart DisabledProduct(%s) = %q, %v", agentBin, p, ok)
	}
	if p, ok := e2.DisabledProduct("/usr/local/bin/"+f.proc, f.proc); !ok || p != f.id {
		t.Errorf("by process name: %q, %v", p, ok)
	}
	if _, ok := e2.DisabledProduct("/usr/bin/sleep", "sleep"); ok {
		t.Error("DisabledProduct matched an unrelated process")
	}

	// The exec path: a new agent process is killed on sight; others are not.
	again := start(t, agentBin, "-c", "sleep 30 & wait")
	if err := e2.KillDisabled(again.pid); err != nil {
		t.Fatal(err)
	}
	again.killedBySIGKILL(t)
	if err := e2.KillDisabled(bystander.pid); !errors.Is(err, ErrNotDisabled) || !bystander.alive(t) {
		t.Fatalf("KillDisabled(unrelated) = %v, want ErrNotDisabled and no kill", err)
	}

	// Idempotent: nothing left to do.
	rerun := func(action string) Result {
		return e2.Run(context.Background(), Request{CommandID: "c2", Action: action, Params: map[string]string{"product": f.id}})
	}
	if res := rerun(ActDisableRMM); res.Status != StatusNoop {
		t.Errorf("second disable-rmm: %+v, want noop", res)
	}

	res = rerun(ActEnableRMM)
	t.Logf("enable-rmm: %+v", res)
	if res.Status != StatusOK {
		t.Fatalf("enable-rmm: %+v", res)
	}
	if _, err := os.Lstat(filepath.Join(sysd, f.unit+".service")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("our mask was not removed: %v", err)
	}
	if tgt, err := os.Readlink(linkUnit); err != nil || tgt != "/lib/systemd/system/elsewhere.service" {
		t.Errorf("replaced symlink not restored: %q, %v", tgt, err)
	}
	checkUnitFile()
	if _, ok := e2.DisabledProduct(agentBin, f.proc); ok {
		t.Error("still disabled after enable-rmm")
	}
	if res := rerun(ActEnableRMM); res.Status != StatusNoop {
		t.Errorf("second enable-rmm: %+v, want noop", res)
	}
	e3, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e3.DisabledProduct(agentBin, f.proc); ok {
		t.Error("enable-rmm was not persisted")
	}
}

func TestDisableRMMLeavesAnAdministratorsMask(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	f := newFakeRMM(t)
	sysd := t.TempDir()
	adminMask := filepath.Join(sysd, f.unit+".service")
	if err := os.Symlink("/dev/null", adminMask); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), SystemdDir: sysd, Catalog: f.catalog})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, a := range []string{ActDisableRMM, ActEnableRMM} {
		if res := e.Run(context.Background(), Request{Action: a, Params: map[string]string{"product": f.id}}); res.Status != StatusOK {
			t.Fatalf("%s: %+v", a, res)
		}
	}
	if tgt, err := os.Readlink(adminMask); err != nil || tgt != "/dev/null" {
		t.Fatalf("enable-rmm removed a mask it did not write: %q, %v", tgt, err)
	}
}

func TestDisableEveryFoundProduct(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	f := newFakeRMM(t)
	sysd := t.TempDir()
	e, err := New(Options{StateDir: t.TempDir(), SystemdDir: sysd, Catalog: f.catalog})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	star := func(action string) Result {
		return e.Run(context.Background(), Request{Action: action, Params: map[string]string{"product": "*"}})
	}
	// Only the first product's install dir exists: the idle one is absent.
	res := star(ActDisableRMM)
	if res.Status != StatusOK || !slices.Contains(res.Affected, "product:"+f.id) || slices.ContainsFunc(res.Affected, func(s string) bool {
		return strings.HasPrefix(s, "product:fake-idle-")
	}) {
		t.Fatalf("disable-rmm *: %+v", res)
	}
	if res := e.Run(context.Background(), Request{Action: ActDisableRMM, Params: map[string]string{"product": "no-such-product"}}); res.Status != StatusRefused {
		t.Errorf("unknown product: %+v, want refused", res)
	}
	if res := star(ActEnableRMM); res.Status != StatusOK || !slices.Contains(res.Affected, "product:"+f.id) {
		t.Fatalf("enable-rmm *: %+v", res)
	}
	if res := star(ActEnableRMM); res.Status != StatusNoop {
		t.Fatalf("enable-rmm * with nothing disabled: %+v", res)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "action"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "action", StateFile), []byte("{oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateDir: dir}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("New with a corrupt state = %v, want an error naming it", err)
	}
}

// TestDisableRMMWithSystemd runs the systemd branch against a stand-in
// systemctl that records its argv (this test host has no systemd as init):
// the order is disable, mask, daemon-reload, stop; enable-rmm re-enables
// and starts exactly the units it recorded.
func TestDisableRMMWithSystemd(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	f := newFakeRMM(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "argv.log")
	fake := filepath.Join(dir, "systemctl")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), SystemdDir: t.TempDir(), Catalog: f.catalog})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.systemdRun, e.systemctlBin = dir, fake // "systemd runs"
	u := f.unit + ".service"
	res := e.Run(context.Background(), Request{Action: ActDisableRMM, Params: map[string]string{"product": f.id}})
	if res.Status != StatusOK || !slices.Contains(res.Affected, "unit-disabled:"+u) || !slices.Contains(res.Affected, "unit-stopped:"+u) {
		t.Fatalf("disable-rmm with systemd: %+v", res)
	}
	res = e.Run(context.Background(), Request{Action: ActEnableRMM, Params: map[string]string{"product": f.id}})
	if res.Status != StatusOK || !slices.Contains(res.Affected, "unit-enabled:"+u) || !slices.Contains(res.Affected, "unit-started:"+u) {
		t.Fatalf("enable-rmm with systemd: %+v", res)
	}
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	at := func(want string, from int) int {
		t.Helper()
		for i := from; i < len(lines); i++ {
			if lines[i] == want {
				return i
			}
		}
		t.Fatalf("systemctl %q not called after call %d; calls:\n%s", want, from, raw)
		return 0
	}
	i := at("is-active --quiet -- "+u, 0)
	i = at("disable -- "+u, i)
	i = at("daemon-reload", i)
	i = at("stop -- "+u, i)
	i = at("daemon-reload", i)
	i = at("enable -- "+u, i)
	at("start -- "+u, i)
	for _, l := range lines {
		if strings.ContainsAny(l, ";&|$`") {
			t.Errorf("unexpected systemctl argv %q", l)
		}
	}
}
