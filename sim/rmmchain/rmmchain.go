// Package rmmchain is a harmless simulation of the Kaseya VSA attack chain
// (July 2021) on Linux, for testing a deployment: an RMM agent runs a
// procedure that copies a system decoder under another name, decodes a
// dropped "certificate" into a program, makes it executable and runs it.
//
// Every piece is a stand-in: the agent is a copy of /bin/sh named as the
// Kaseya Linux agent (agentmon), the decoder a renamed copy of base64, and
// the payload a shell script that only writes a marker file. Nothing is
// placed outside the directory the simulator creates under --dir, unless an
// install root is given explicitly (then the agent goes into a fresh
// subdirectory of it). Everything created, including what the chain itself
// will create, is listed in a manifest first; Undo removes exactly that.
package rmmchain

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/sim/simdir"
)

// The product the agent stand-in poses as: a Linux agent of the catalog
// (rules/rmm/catalog.yaml) that the RMM detector recognises by process name
// anywhere, and by install path under InstallRoot.
const (
	Product     = "kaseya-vsa"
	AgentName   = "agentmon"
	InstallRoot = "/opt/kaseya/"
)

// Names under DIR.
const (
	ManifestName = ".tillwatch-rmm-chain.json"
	RootName     = "tillwatch-rmm-chain"
	// MarkerName is the file the payload writes: its presence means the
	// chain ran to the end (nothing stopped it).
	MarkerName = "payload-ran.marker"
)

// Kinds of manifest entries.
const (
	KindDir  = "dir"
	KindFile = "file"
)

// Entry is one path the simulation creates. By says who creates it: the
// simulator itself ("simulator") or the chain while it runs ("chain"; it
// may not exist when the chain was stopped).
type Entry struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	By     string `json:"by"`
	SHA256 string `json:"sha256,omitempty"`
}

// Manifest records the simulation set up under Dir.
type Manifest struct {
	Dir     string  `json:"dir"`
	Product string  `json:"product"`
	Agent   string  `json:"agent"`     // the agent stand-in
	WorkDir string  `json:"work_dir"`  // where the procedure runs (Kaseya: C:\kworking)
	Script  string  `json:"procedure"` // the procedure the agent runs
	Marker  string  `json:"marker"`
	Created []Entry `json:"created"` // in creation order
}

// Options configure Create.
type Options struct {
	// Dir is an existing directory; the simulation lives in Dir/RootName
	// and the manifest in Dir/ManifestName.
	Dir string
	// InstallRoot, when set, is the agent's real install directory
	// (InstallRoot); the agent is placed in a new subdirectory of it. By
	// default the agent goes under Dir/RootName/opt/kaseya/, which only
	// mimics the path: the detector then knows it by its name.
	InstallRoot string
	// Shell and Base64 are the programs copied (default: /bin/sh and the
	// base64 on PATH). The decoder must be a system binary so a renamed
	// copy of it is recognised by content.
	Shell, Base64 string
	// Pause is the wait between the steps of the procedure (default 1s):
	// the real procedure paused too, and it gives an enforcing sensor the
	// time to stop the chain between the decode and the run.
	Pause time.Duration
	// Hold keeps the decoder running this long (default 500ms) by feeding it
	// the certificate through a pipe after a pause. The sensor reads a
	// process's command line from /proc after the kernel reports the exec;
	// a decoder that is done in a millisecond may be gone by then.
	Hold time.Duration
}

// Create sets the simulation up: directories, the agent stand-in, the
// dropped certificate and the procedure, and the manifest listing them and
// what the chain will create. A directory already set up is refused.
func Create(o Options) (*Manifest, error) {
	if o.Shell == "" {
		o.Shell = "/bin/sh"
	}
	if o.Base64 == "" {
		p, err := exec.LookPath("base64")
		if err != nil {
			return nil, fmt.Errorf("base64 (the decoder the chain renames): %w", err)
		}
		o.Base64 = p
	}
	if o.Pause <= 0 {
		o.Pause = time.Second
	}
	if o.Hold <= 0 {
		o.Hold = 500 * time.Millisecond
	}
	dir, err := simdir.Check(o.Dir)
	if err != nil {
		return nil, err
	}
	top, err := atomicfile.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer top.Close()
	mp := filepath.Join(dir, ManifestName)
	if _, err := os.Lstat(mp); err == nil {
		return nil, fmt.Errorf("%s is already set up (%s): run with --undo first", dir, mp)
	}
	root := filepath.Join(dir, RootName)
	m := &Manifest{Dir: dir, Product: Product}
	// The manifest is written before anything else and after every step,
	// so an interrupted set-up can still be undone.
	var b builder
	b.m = m
	save := func() error { return writeJSON(top, m) }
	if err := save(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Manifest, error) {
		_ = save()
		return nil, fmt.Errorf("set up %s: %w (undo with --undo)", root, err)
	}
	if err := b.mkdir(root); err != nil {
		return fail(err)
	}
	agentDir := filepath.Join(root, "opt", "kaseya")
	if o.InstallRoot != "" {
		if agentDir, err = b.installDir(o.InstallRoot); err != nil {
			return fail(err)
		}
	} else if err := b.mkdirAll(agentDir); err != nil {
		return fail(err)
	}
	m.Agent = filepath.Join(agentDir, AgentName)
	if err := b.copy(o.Shell, m.Agent, 0o755); err != nil {
		return fail(err)
	}
	m.WorkDir = filepath.Join(root, "kworking")
	if err := b.mkdir(m.WorkDir); err != nil {
		return fail(err)
	}
	m.Marker = filepath.Join(m.WorkDir, MarkerName)
	// The payload lives for Hold before it writes, as a real one runs for
	// a while, so the sensor sees it run (TW-RMM-0102) when nothing stops it.
	payload := "#!/bin/sh\n# tillwatch simulate rmm-chain: the payload stand-in. It only writes the marker.\n" +
		"sleep " + seconds(o.Hold) + "\n" +
		"echo 'tillwatch rmm-chain simulation: the payload ran (nothing stopped the chain)' > " + quote(m.Marker) + "\n"
	cert := base64.StdEncoding.EncodeToString([]byte(payload))
	if err := b.write(filepath.Join(m.WorkDir, "agent.crt"), []byte(wrap(cert)), 0o644); err != nil {
		return fail(err)
	}
	// What the chain creates: the renamed decoder, the decoded payload, the marker.
	decoder := filepath.Join(m.WorkDir, "cert")
	b.expect(decoder, hashFileOr(o.Base64))
	b.expect(filepath.Join(m.WorkDir, "agent.sh"), hash([]byte(payload)))
	b.expect(m.Marker, "")
	m.Script = filepath.Join(m.WorkDir, "procedure.sh")
	if err := b.write(m.Script, []byte(procedure(m.WorkDir, o)), 0o644); err != nil {
		return fail(err)
	}
	if err := save(); err != nil {
		return fail(err)
	}
	return m, nil
}

// procedure is the stand-in of the Kaseya procedure (cmd.exe /c "ping
// (delay) & copy certutil.exe cert.exe & cert -decode agent.crt agent.exe &
// agent.exe"), step by step with pauses.
func procedure(work string, o Options) string {
	p, h := seconds(o.Pause), seconds(o.Hold)
	return strings.Join([]string{
		"#!/bin/sh",
		"# tillwatch simulate rmm-chain: harmless stand-in of the Kaseya VSA procedure (2021).",
		"cd " + quote(work) + " || exit 1",
		"sleep " + p,
		"# 1. copy the system decoder under another name (certutil.exe -> cert.exe)",
		"cp " + quote(o.Base64) + " ./cert",
		"sleep " + p,
		"# 2. decode the dropped certificate into a program; the input arrives",
		"#    after a short hold so the decoder is visible in /proc",
		"(sleep " + h + "; cat agent.crt) | ./cert -d > agent.sh",
		"sleep " + p,
		"# 3. make it executable",
		"chmod +x agent.sh",
		"sleep " + p,
		"# 4. run it: it writes " + MarkerName,
		"./agent.sh",
		"",
	}, "\n")
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// Result is what one run of the chain did.
type Result struct {
	AgentPID int
	// ProcedureStatus is the procedure's exit status as the agent saw it
	// (128+signal when it was killed), -1 if unknown.
	ProcedureStatus int
	MarkerWritten   bool
	Elapsed         time.Duration
}

// Run starts the agent stand-in, which runs the procedure as its child (so
// the chain is agent -> sh -> steps, as agentmon -> cmd.exe -> steps was),
// and waits for it. stdout and stderr receive the agent's output.
func Run(ctx context.Context, m *Manifest, stdout, stderr io.Writer) (Result, error) {
	res := Result{ProcedureStatus: -1}
	// Not a single command: a shell may exec the last command of -c in
	// its own place, and the agent must stay the procedure's parent.
	script := "/bin/sh " + quote(m.Script) + "; rc=$?; echo \"rmm-chain: procedure exited with status $rc\"; exit $rc"
	cmd := exec.CommandContext(ctx, m.Agent, "-c", script)
	cmd.Dir = m.WorkDir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start the agent stand-in %s: %w", m.Agent, err)
	}
	res.AgentPID = cmd.Process.Pid
	err := cmd.Wait()
	res.Elapsed = time.Since(start)
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.ProcedureStatus = 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		res.ProcedureStatus = ee.ExitCode()
		err = nil
	}
	if _, serr := os.Lstat(m.Marker); serr == nil {
		res.MarkerWritten = true
	}
	return res, err
}

// Load reads dir's manifest. Undo deletes what it lists as root, in a
// folder other users may write, so it is trusted only if it is a regular
// file owned by the user running the simulator, private (0600), with one
// link, naming dir itself: a user can replace it but cannot make a file
// that passes.
func Load(dir string) (*Manifest, error) {
	dir, b, err := simdir.ReadManifest(dir, ManifestName, 16<<20)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, ManifestName)
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	if m.Dir != dir {
		return nil, fmt.Errorf("manifest %s is for %q, not this folder", p, m.Dir)
	}
	return &m, nil
}

// Undo removes exactly what the manifest lists, newest first: files (those
// the chain did not get to create are skipped) and then directories, which
// are removed only when empty, so nothing the simulation did not create is
// touched. Only paths the simulation can have created are considered (see
// ours), and each is removed relative to its opened folder, never through
// a symlink. The manifest goes last; on any error it is kept so a second
// undo can finish. It returns how many paths it removed.
func Undo(dir string) (int, error) {
	m, err := Load(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for i, e := range slices.Backward(m.Created) {
		if !filepath.IsAbs(e.Path) || filepath.Clean(e.Path) != e.Path {
			errs = append(errs, fmt.Errorf("manifest path %q is not clean and absolute; skipped", e.Path))
			continue
		}
		if !ours(m, i, e) {
			errs = append(errs, fmt.Errorf("manifest path %s is outside what the simulation creates; left alone", e.Path))
			continue
		}
		removed, err := remove(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if removed {
			n++
		}
	}
	if len(errs) > 0 {
		return n, errors.Join(errs...)
	}
	top, err := atomicfile.OpenDir(m.Dir)
	if err != nil {
		return n, err
	}
	defer top.Close()
	return n, top.Remove(ManifestName)
}

// ours reports whether entry i can be something the simulation created:
// a path in Dir/RootName, or in an agent directory (tillwatch-sim-*) that
// an earlier entry records the simulator creating, or a directory the
// simulator created on the way to one (a missing install root).
func ours(m *Manifest, i int, e Entry) bool {
	if within(e.Path, filepath.Join(m.Dir, RootName)) {
		return true
	}
	for _, prev := range m.Created[:i] {
		if prev.Kind == KindDir && prev.By == "simulator" && strings.HasPrefix(filepath.Base(prev.Path), "tillwatch-sim-") &&
			e.Path != prev.Path && within(e.Path, prev.Path) {
			return true
		}
	}
	if e.Kind != KindDir || e.By != "simulator" {
		return false
	}
	if strings.HasPrefix(filepath.Base(e.Path), "tillwatch-sim-") {
		return true // the agent directory itself
	}
	// A created parent of an agent directory that follows it.
	for _, next := range m.Created[i+1:] {
		if next.Kind == KindDir && within(next.Path, e.Path) {
			return true
		}
	}
	return false
}

func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// remove deletes e relative to its opened parent (atomicfile.OpenDir: no
// symlink a user planted is followed); false when it was already gone.
// unlinkat refuses a directory and rmdir a file, so a path that changed
// kind is left alone.
func remove(e Entry) (bool, error) {
	d, err := atomicfile.OpenDir(filepath.Dir(e.Path))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	name := filepath.Base(e.Path)
	if e.Kind == KindDir {
		err = d.RemoveDir(name)
	} else {
		err = d.Remove(name)
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil && e.Kind == KindDir:
		return false, fmt.Errorf("%w (something the simulation did not create is inside, or it is no longer a directory; remove it, then undo again)", err)
	case err != nil:
		return false, fmt.Errorf("%w (no longer a file; left alone)", err)
	}
	return true, nil
}

// builder creates paths and records each in the manifest as it goes.
type builder struct{ m *Manifest }

func (b *builder) add(e Entry) { b.m.Created = append(b.m.Created, e) }

func (b *builder) mkdir(p string) error {
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	b.add(Entry{Path: p, Kind: KindDir, By: "simulator"})
	return nil
}

// mkdirAll creates p and the parents that are missing, recording each.
func (b *builder) mkdirAll(p string) error {
	if fi, err := os.Stat(p); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
		return nil
	}
	if err := b.mkdirAll(filepath.Dir(p)); err != nil {
		return err
	}
	return b.mkdir(p)
}

// installDir makes a new directory for the agent under the real install
// root: the root is created (and recorded) only if missing, and the agent
// always gets a fresh subdirectory, so an installed product is never touched.
func (b *builder) installDir(root string) (string, error) {
	root = filepath.Clean(root)
	if err := b.mkdirAll(root); err != nil {
		return "", err
	}
	d, err := os.MkdirTemp(root, "tillwatch-sim-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(d, 0o755); err != nil {
		_ = os.Remove(d)
		return "", err
	}
	b.add(Entry{Path: d, Kind: KindDir, By: "simulator"})
	return d, nil
}

func (b *builder) write(p string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	b.add(Entry{Path: p, Kind: KindFile, By: "simulator", SHA256: hash(data)})
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

func (b *builder) copy(from, to string, mode os.FileMode) error {
	real, err := filepath.EvalSymlinks(from)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return err
	}
	return b.write(to, data, mode)
}

func (b *builder) expect(p, sum string) {
	b.add(Entry{Path: p, Kind: KindFile, By: "chain", SHA256: sum})
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func hashFileOr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return hash(b)
}

// wrap breaks base64 into 64-column lines, as in a PEM certificate (the
// BEGIN/END lines are left out: base64 -d does not skip them as certutil
// does).
func wrap(s string) string {
	var sb strings.Builder
	for len(s) > 64 {
		sb.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	sb.WriteString(s + "\n")
	return sb.String()
}

// quote makes s one shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func writeJSON(d *atomicfile.Dir, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	return d.Write(ManifestName, b, 0o600)
}
