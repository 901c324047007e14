package packaging

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	collectordeploy "github.com/tillwatch/tillwatch/collector/deploy"
	sensordeploy "github.com/tillwatch/tillwatch/sensor/deploy"
)

// script runs one maintainer script from fsys against the scratch root
// (DPKG_ROOT), with a systemctl on PATH that records every call. dpkg runs
// maintainer scripts with /bin/sh; so does this.
type scripts struct {
	t       *testing.T
	fsys    fs.FS
	root    string
	bin     string // holds the fake systemctl
	calls   string // its log
	envPath string
}

func newScripts(t *testing.T, fsys fs.FS) *scripts {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("maintainer scripts chown: run as root (CI does)")
	}
	s := &scripts{t: t, fsys: fsys, root: t.TempDir(), bin: t.TempDir()}
	s.calls = filepath.Join(s.bin, "calls")
	fake := "#!/bin/sh\necho \"systemctl $*\" >> " + s.calls + "\n"
	if err := os.WriteFile(filepath.Join(s.bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	s.envPath = s.bin + ":" + os.Getenv("PATH") + ":/usr/sbin:/usr/bin:/sbin:/bin"
	return s
}

func (s *scripts) run(name string, args ...string) {
	s.t.Helper()
	b, err := fs.ReadFile(s.fsys, name)
	if err != nil {
		s.t.Fatal(err)
	}
	p := filepath.Join(s.bin, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", append([]string{p}, args...)...)
	cmd.Env = []string{"PATH=" + s.envPath, "DPKG_ROOT=" + s.root, "DPKG_MAINTSCRIPT_NAME=" + name}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// noSystemctl checks systemd was left alone: DPKG_ROOT is not the running system.
func (s *scripts) noSystemctl() {
	s.t.Helper()
	if b, err := os.ReadFile(s.calls); err == nil {
		s.t.Errorf("systemctl was called for a DPKG_ROOT install:\n%s", b)
	}
}

func (s *scripts) wantDir(path string, mode fs.FileMode, uid, gid int) {
	s.t.Helper()
	fi, err := os.Stat(filepath.Join(s.root, path))
	if err != nil {
		s.t.Errorf("%s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		s.t.Errorf("%s: %v owned %d:%d, want a directory %v owned %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

func (s *scripts) wantGone(path string) {
	s.t.Helper()
	if _, err := os.Lstat(filepath.Join(s.root, path)); err == nil {
		s.t.Errorf("%s still exists", path)
	}
}

func (s *scripts) write(path, content string, mode fs.FileMode) {
	s.t.Helper()
	p := filepath.Join(s.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		s.t.Fatal(err)
	}
}

func TestSensorScripts(t *testing.T) {
	t.Parallel()
	s := newScripts(t, sensordeploy.Files)
	const conf = "# edited by the operator\nmode: enforce\n"
	s.write("etc/tillwatch/sensor.yaml", conf, 0o600)

	s.run("postinst", "configure", "") // first install
	for _, d := range []string{"/var/lib/tillwatch", "/var/lib/tillwatch/spool", "/var/log/tillwatch"} {
		s.wantDir(d, 0o700, 0, 0)
	}
	// A loosened state dir is tightened again on upgrade; state survives.
	if err := os.Chmod(filepath.Join(s.root, "var/lib/tillwatch"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.write("var/lib/tillwatch/identity.json", "{}", 0o600)
	s.run("postinst", "configure", "1.0.0")
	s.wantDir("/var/lib/tillwatch", 0o700, 0, 0)
	if _, err := os.Stat(filepath.Join(s.root, "var/lib/tillwatch/identity.json")); err != nil {
		t.Errorf("upgrade lost state: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.root, "etc/tillwatch/sensor.yaml")); string(b) != conf {
		t.Errorf("postinst changed the configuration: %q", b)
	}

	s.run("prerm", "upgrade", "1.1.0")
	s.run("postrm", "upgrade", "1.1.0")
	s.run("prerm", "remove")
	s.run("postrm", "remove")
	s.wantDir("/var/lib/tillwatch", 0o700, 0, 0) // remove keeps state
	s.run("postrm", "purge")
	s.wantGone("/var/lib/tillwatch")
	s.wantGone("/var/log/tillwatch")
	s.noSystemctl()
}

func TestCollectorScripts(t *testing.T) {
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed (apt-get install passwd)")
	}
	t.Parallel()
	s := newScripts(t, collectordeploy.Files)
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		s.write(f, "", 0o600)
	}
	s.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	s.write("etc/group", "root:x:0:\n", 0o644)
	// dpkg unpacks the conffile before postinst runs.
	s.write("etc/tillwatch/collector.yaml", "listen: \":8443\"\n", 0o640)

	s.run("postinst", "configure", "")
	passwd, _ := os.ReadFile(filepath.Join(s.root, "etc/passwd"))
	var line string
	for _, l := range strings.Split(string(passwd), "\n") {
		if strings.HasPrefix(l, "tillwatch:") {
			if line != "" {
				t.Fatalf("user tillwatch twice:\n%s", passwd)
			}
			line = l
		}
	}
	f := strings.Split(line, ":")
	if len(f) != 7 {
		t.Fatalf("no passwd entry for tillwatch:\n%s", passwd)
	}
	uid, _ := strconv.Atoi(f[2])
	gid, _ := strconv.Atoi(f[3])
	if uid == 0 || uid >= 1000 || f[5] != "/var/lib/tillwatch-collector" || f[6] != "/usr/sbin/nologin" {
		t.Errorf("passwd entry %q: want a system uid (1-999), home /var/lib/tillwatch-collector, shell /usr/sbin/nologin", line)
	}
	if group, _ := os.ReadFile(filepath.Join(s.root, "etc/group")); !strings.Contains(string(group), "tillwatch:x:"+f[3]+":") {
		t.Errorf("no group tillwatch with gid %s:\n%s", f[3], group)
	}
	s.wantDir("/var/lib/tillwatch-collector", 0o700, uid, gid)
	fi, err := os.Stat(filepath.Join(s.root, "etc/tillwatch/collector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o640 || st.Uid != 0 || int(st.Gid) != gid {
		t.Errorf("collector.yaml %v %d:%d, want 0640 root:tillwatch so the service user reads it", fi.Mode().Perm(), st.Uid, st.Gid)
	}

	// Upgrade: same user, the administrator's choice of config mode stays.
	if err := os.Chmod(filepath.Join(s.root, "etc/tillwatch/collector.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.run("postinst", "configure", "1.0.0")
	if again, _ := os.ReadFile(filepath.Join(s.root, "etc/passwd")); string(again) != string(passwd) {
		t.Errorf("upgrade changed /etc/passwd:\n%s", again)
	}
	if fi, _ := os.Stat(filepath.Join(s.root, "etc/tillwatch/collector.yaml")); fi.Mode().Perm() != 0o600 {
		t.Errorf("upgrade reset the config mode to %v", fi.Mode().Perm())
	}

	s.run("prerm", "remove")
	s.run("postrm", "remove")
	s.wantDir("/var/lib/tillwatch-collector", 0o700, uid, gid)
	s.run("postrm", "purge")
	s.wantGone("/var/lib/tillwatch-collector")
	s.noSystemctl()
}

// TestScriptsRefuseUnknownActions: dpkg's contract is that an unknown
// action fails loudly rather than doing something.
func TestScriptsRefuseUnknownActions(t *testing.T) {
	t.Parallel()
	for _, fsys := range []fs.FS{sensordeploy.Files, collectordeploy.Files} {
		for _, name := range []string{"postinst", "prerm", "postrm"} {
			b, err := fs.ReadFile(fsys, name)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(p, b, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := exec.Command("/bin/sh", "-n", p).Run(); err != nil {
				t.Errorf("sh -n %s: %v", name, err)
			}
			cmd := exec.Command("/bin/sh", p, "no-such-action")
			cmd.Env = []string{"PATH=/nonexistent", "DPKG_ROOT=" + t.TempDir()}
			if err := cmd.Run(); err == nil {
				t.Errorf("%s no-such-action exited 0", name)
			}
		}
	}
}
