package packaging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectorconfig "github.com/tillwatch/tillwatch/collector/config"
	sensorconfig "github.com/tillwatch/tillwatch/sensor/config"
)

// testVersion is what the test binaries are stamped with, as `make build`
// stamps git describe; testDebVersion is what the packages must carry.
const (
	testVersion    = "v1.2.3-4-gabcdef1"
	testDebVersion = "1.2.3+git4.gabcdef1"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// testBinaries builds the three real binaries once, without cgo (so without
// YARA: the test does not need libyara), stamped with testVersion.
func testBinaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tillwatch-packaging-bin-")
		if err != nil {
			binErr = err
			return
		}
		binDir = dir
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X "+versionSymbol+"="+testVersion,
			"-o", dir+string(os.PathSeparator), "./cmd/tillwatch", "./cmd/tillwatch-sensor", "./cmd/tillwatch-collector")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New("go build: " + err.Error() + ": " + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{binDir, pkgDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func needDpkgDeb(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed (apt-get install dpkg)")
	}
}

var (
	pkgOnce sync.Once
	pkgDir  string
	pkgs    map[string]Built
	pkgErr  error
)

// buildPackages packages the test binaries once for the tests that only
// read the packages. data.tar is left uncompressed: gzip -9 of ~100 MB
// under the race detector costs minutes and is nfpm's, not ours.
func buildPackages(t *testing.T) map[string]Built {
	t.Helper()
	bins := testBinaries(t)
	pkgOnce.Do(func() {
		if pkgDir, pkgErr = os.MkdirTemp("", "tillwatch-packaging-deb-"); pkgErr != nil {
			return
		}
		var built []Built
		built, pkgErr = Build(Options{BinDir: bins, OutDir: pkgDir, Version: testVersion, AllowNoYARA: true,
			MTime: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Compression: "none"})
		pkgs = map[string]Built{}
		for _, b := range built {
			pkgs[b.Name] = b
		}
	})
	if pkgErr != nil {
		t.Fatal(pkgErr)
	}
	return pkgs
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// entry is one line of dpkg-deb --contents.
type entry struct {
	mode, owner string
	dir         bool
}

// contents parses dpkg-deb --contents: "-rwxr-xr-x root/root 123 date time ./usr/bin/x".
func contents(t *testing.T, deb string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("unexpected dpkg-deb --contents line %q", line)
		}
		path := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		if path == "" {
			continue
		}
		out[path] = entry{mode: f[0], owner: f[1], dir: strings.HasPrefix(f[0], "d")}
	}
	return out
}

func field(t *testing.T, deb, name string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, name))
}

func TestPackagesWithDpkgDeb(t *testing.T) {
	needDpkgDeb(t)
	pkgs := buildPackages(t)

	type want struct {
		files      map[string]string // path -> mode as dpkg-deb prints it
		conffiles  []string
		depends    string
		recommends string
		scripts    bool
	}
	tests := map[string]want{
		SensorPackage: {
			files: map[string]string{
				"/usr/bin/tillwatch-sensor":                        "-rwxr-xr-x",
				"/etc/tillwatch/sensor.yaml":                       "-rw-------",
				"/usr/lib/systemd/system/tillwatch-sensor.service": "-rw-r--r--",
			},
			conffiles:  []string{"/etc/tillwatch/sensor.yaml"},
			depends:    "", // a static binary (no cgo) needs nothing
			recommends: "tillwatch-cli (= " + testDebVersion + "), libmagic-mgc",
			scripts:    true,
		},
		CollectorPackage: {
			files: map[string]string{
				"/usr/bin/tillwatch-collector":                        "-rwxr-xr-x",
				"/etc/tillwatch/collector.yaml":                       "-rw-r-----",
				"/usr/lib/systemd/system/tillwatch-collector.service": "-rw-r--r--",
			},
			conffiles:  []string{"/etc/tillwatch/collector.yaml"},
			depends:    "passwd",
			recommends: "tillwatch-cli (= " + testDebVersion + ")",
			scripts:    true,
		},
		CLIPackage: {
			files: map[string]string{"/usr/bin/tillwatch": "-rwxr-xr-x"},
		},
	}
	if len(pkgs) != len(tests) {
		t.Fatalf("built %d packages, want %d", len(pkgs), len(tests))
	}
	for name, w := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, ok := pkgs[name]
			if !ok {
				t.Fatalf("package %s not built", name)
			}
			if got, want := filepath.Base(b.Path), name+"_"+testDebVersion+"_"+b.Arch+".deb"; got != want {
				t.Errorf("file name %s, want %s", got, want)
			}
			info := run(t, "dpkg-deb", "--info", b.Path)
			for _, f := range []string{"Package: " + name, "Version: " + testDebVersion, "Architecture: " + b.Arch, "Section: admin", "Maintainer: " + DefaultMaint} {
				if !strings.Contains(info, f) {
					t.Errorf("dpkg-deb --info lacks %q:\n%s", f, info)
				}
			}
			if got := field(t, b.Path, "Package"); got != name {
				t.Errorf("Package %q", got)
			}
			if got := field(t, b.Path, "Version"); got != testDebVersion {
				t.Errorf("Version %q, want %q", got, testDebVersion)
			}
			if got := field(t, b.Path, "Depends"); got != w.depends {
				t.Errorf("Depends %q, want %q", got, w.depends)
			}
			if got := field(t, b.Path, "Recommends"); got != w.recommends {
				t.Errorf("Recommends %q, want %q", got, w.recommends)
			}

			got := contents(t, b.Path)
			for path, mode := range w.files {
				e, ok := got[path]
				switch {
				case !ok:
					t.Errorf("%s missing", path)
				case e.mode != mode:
					t.Errorf("%s mode %s, want %s", path, e.mode, mode)
				case e.owner != "root/root":
					t.Errorf("%s owned by %s, want root/root", path, e.owner)
				}
			}
			for path, e := range got {
				if _, ok := w.files[path]; !ok && !e.dir {
					t.Errorf("unexpected file %s", path)
				}
			}

			control := t.TempDir()
			run(t, "dpkg-deb", "--control", b.Path, control)
			conf, err := os.ReadFile(filepath.Join(control, "conffiles"))
			if len(w.conffiles) == 0 {
				if err == nil {
					t.Errorf("unexpected conffiles %q", conf)
				}
			} else if got := strings.Fields(string(conf)); !slices.Equal(got, w.conffiles) {
				t.Errorf("conffiles %q, want %q (err %v)", got, w.conffiles, err)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				p := filepath.Join(control, s)
				fi, err := os.Stat(p)
				if !w.scripts {
					if err == nil {
						t.Errorf("unexpected %s", s)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", s, err)
					continue
				}
				if fi.Mode().Perm() != 0o755 {
					t.Errorf("%s mode %v, want 0755", s, fi.Mode().Perm())
				}
				run(t, "sh", "-n", p)
				if b, _ := os.ReadFile(p); !bytes.HasPrefix(b, []byte("#!/bin/sh\n")) {
					t.Errorf("%s does not start with #!/bin/sh", s)
				}
			}
		})
	}
}

// TestShippedConfigsPassStrictValidation loads the configuration files as
// installed, with the real loaders and the real binaries from the package.
func TestShippedConfigsPassStrictValidation(t *testing.T) {
	needDpkgDeb(t)
	pkgs := buildPackages(t)
	root := t.TempDir()
	for _, name := range []string{SensorPackage, CollectorPackage} {
		run(t, "dpkg-deb", "-x", pkgs[name].Path, root)
	}

	t.Run("sensor", func(t *testing.T) {
		conf := filepath.Join(root, "etc/tillwatch/sensor.yaml")
		cfg, err := sensorconfig.Load(conf)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("shipped sensor.yaml does not validate: %v", err)
		}
		if cfg.StateDir != "/var/lib/tillwatch" || cfg.Mode != "monitor" || !cfg.Collector.Disabled {
			t.Errorf("state_dir %q mode %q collector.disabled %v: want /var/lib/tillwatch, monitor, true", cfg.StateDir, cfg.Mode, cfg.Collector.Disabled)
		}
		// The packaged binary checks the packaged file (exit 0 = it can run).
		out := run(t, filepath.Join(root, "usr/bin/tillwatch-sensor"), "check", "-c", conf, "--state-dir", t.TempDir())
		if !strings.Contains(out, "mode: monitor") {
			t.Errorf("check output lacks the effective mode:\n%s", out)
		}
		if v := run(t, filepath.Join(root, "usr/bin/tillwatch-sensor"), "version"); !strings.Contains(v, testVersion) {
			t.Errorf("packaged sensor says %q, want version %s", v, testVersion)
		}
	})
	t.Run("collector", func(t *testing.T) {
		conf := filepath.Join(root, "etc/tillwatch/collector.yaml")
		cfg, err := collectorconfig.Load(conf)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("shipped collector.yaml does not validate: %v", err)
		}
		if cfg.DataDir != "/var/lib/tillwatch-collector" {
			t.Errorf("data_dir %q, want /var/lib/tillwatch-collector", cfg.DataDir)
		}
		// token create loads and validates the file like run does; --data
		// keeps it off the real data dir.
		tok := run(t, filepath.Join(root, "usr/bin/tillwatch-collector"), "token", "create", "--role", "sensor", "-c", conf, "--data", t.TempDir())
		if strings.TrimSpace(tok) == "" {
			t.Error("token create printed no token")
		}
	})
}

func TestBuildRefuses(t *testing.T) {
	bins := testBinaries(t)
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"a sensor without static YARA", Options{BinDir: bins, Version: testVersion}, "without statically linked YARA"},
		{"binaries of another version", Options{BinDir: bins, Version: "v9.9.9", AllowNoYARA: true}, `is version "` + testVersion + `"`},
		{"a missing binary", Options{BinDir: t.TempDir(), Version: testVersion, AllowNoYARA: true}, "run make build"},
		{"a version Debian cannot take", Options{BinDir: bins, Version: "", AllowNoYARA: true}, "empty version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.o.OutDir = t.TempDir()
			_, err := Build(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
			if left, _ := os.ReadDir(tc.o.OutDir); len(left) != 0 {
				t.Errorf("refused build left %d files in the output dir", len(left))
			}
		})
	}
}

func TestSharedLibDepends(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	t.Parallel()
	dir := t.TempDir()
	build := func(t *testing.T, name, src, ldflags string) string {
		t.Helper()
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "go.mod"), []byte("module x\n\ngo 1.22\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(d, "bin")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = d
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-buildvcs=false", "CGO_LDFLAGS="+ldflags)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, b)
		}
		return out
	}
	cgo := "package main\n\n// #include <stdlib.h>\nimport \"C\"\n\nfunc main() { C.free(C.malloc(1)) }\n"

	t.Run("static Go binary needs nothing", func(t *testing.T) {
		deps, err := sharedLibDepends(filepath.Join(testBinaries(t), "tillwatch"))
		if err != nil || len(deps) != 0 {
			t.Fatalf("deps %q err %v, want none", deps, err)
		}
	})
	t.Run("cgo binary needs libc6 of its newest symbol", func(t *testing.T) {
		deps, err := sharedLibDepends(build(t, "cgo", cgo, ""))
		if err != nil {
			t.Fatal(err)
		}
		if len(deps) != 1 || !regexp.MustCompile(`^libc6 \(>= 2\.[0-9]+\)$`).MatchString(deps[0]) {
			t.Fatalf("deps %q, want [libc6 (>= 2.N)]", deps)
		}
	})
	t.Run("a dynamic library beyond glibc is refused", func(t *testing.T) {
		if out, err := exec.Command("gcc", "-print-file-name=libz.so").Output(); err != nil || !filepath.IsAbs(strings.TrimSpace(string(out))) {
			t.Skip("libz.so not installed (zlib1g-dev)")
		}
		_, err := sharedLibDepends(build(t, "libz", cgo, "-Wl,--no-as-needed -lz"))
		if err == nil || !strings.Contains(err.Error(), "libz.so") {
			t.Fatalf("err %v, want one naming libz.so", err)
		}
	})
}

func TestVersionLess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "2.2.5", true}, {"2.2.5", "2.34", true}, {"2.34", "2.4", false}, {"2.34", "2.34", false},
		{"2.34", "PRIVATE", false}, {"2.3", "2.3.4", true},
	}
	for _, tc := range tests {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestDpkgLifecycleInScratchRoot installs, reinstalls, removes and purges the
// packages with the real dpkg into a scratch root (--root, the maintainer
// scripts run outside a chroot with DPKG_ROOT set): never into this system.
func TestDpkgLifecycleInScratchRoot(t *testing.T) {
	needDpkgDeb(t)
	for _, tool := range []string{"dpkg", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg --root needs root (CI runs as root)")
	}
	pkgs := buildPackages(t)
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for f, content := range map[string]string{
		"var/lib/dpkg/status": "", "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
		"etc/shadow": "", "etc/gshadow": "",
	} {
		if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkg := func(args ...string) {
		t.Helper()
		// --force-depends: the scratch root has no libc6 or passwd package.
		run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	status := func(pkg string) string {
		return strings.TrimSpace(run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${db:Status-Abbrev}", pkg))
	}

	dpkg("-i", pkgs[CLIPackage].Path, pkgs[SensorPackage].Path, pkgs[CollectorPackage].Path)
	for _, p := range []string{CLIPackage, SensorPackage, CollectorPackage} {
		if s := status(p); s != "ii" {
			t.Errorf("%s status %q after install, want ii", p, s)
		}
	}
	for _, p := range []string{"usr/bin/tillwatch", "usr/bin/tillwatch-sensor", "usr/bin/tillwatch-collector", "var/lib/tillwatch", "var/lib/tillwatch-collector"} {
		if !exists(p) {
			t.Errorf("%s missing after install", p)
		}
	}
	if passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); !strings.Contains(string(passwd), "\ntillwatch:") {
		t.Errorf("no tillwatch user after install:\n%s", passwd)
	}

	// An edited configuration and the sensor's state survive a reinstall.
	conf := filepath.Join(root, "etc/tillwatch/sensor.yaml")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	edited := append(orig, "# edited on this till\n"...)
	if err := os.WriteFile(conf, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/tillwatch/identity.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg("--force-confold", "-i", pkgs[SensorPackage].Path)
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, edited) {
		t.Errorf("reinstall changed the edited sensor.yaml")
	}
	if !exists("var/lib/tillwatch/identity.json") {
		t.Error("reinstall lost the sensor's state")
	}

	dpkg("-r", SensorPackage)
	if exists("usr/bin/tillwatch-sensor") || !exists("etc/tillwatch/sensor.yaml") || !exists("var/lib/tillwatch/identity.json") {
		t.Error("remove: want the binary gone, configuration and state kept")
	}
	dpkg("-P", SensorPackage, CollectorPackage)
	for _, p := range []string{"etc/tillwatch/sensor.yaml", "etc/tillwatch/collector.yaml", "var/lib/tillwatch", "var/log/tillwatch", "var/lib/tillwatch-collector", "usr/lib/systemd/system/tillwatch-sensor.service"} {
		if exists(p) {
			t.Errorf("%s left after purge", p)
		}
	}
	if s := status(CLIPackage); s != "ii" {
		t.Errorf("purging the services touched tillwatch-cli: %q", s)
	}
}
