// Package packaging builds tillwatch's Debian packages with nfpm (as a
// library, not its CLI): tillwatch-sensor, tillwatch-collector and
// tillwatch-cli, from the binaries `make build` links and the units,
// configurations and maintainer scripts kept as real files in sensor/deploy
// and collector/deploy. `make deb` runs it through build/packaging/mkdeb.
//
// What it refuses: binaries of another version than the one being packaged,
// binaries for different architectures or not for Linux, a sensor without
// statically linked YARA (unless AllowNoYARA), and any dynamic library
// beyond glibc (a till would not have it).
package packaging

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	collectordeploy "github.com/tillwatch/tillwatch/collector/deploy"
	sensordeploy "github.com/tillwatch/tillwatch/sensor/deploy"
)

// Package names.
const (
	SensorPackage    = "tillwatch-sensor"
	CollectorPackage = "tillwatch-collector"
	CLIPackage       = "tillwatch-cli"
)

// Installed paths.
const (
	BinDir    = "/usr/bin"
	ConfigDir = "/etc/tillwatch"
	UnitDir   = "/usr/lib/systemd/system"
)

// Control fields. The maintainer address is a placeholder until the
// project has one; releases pass --maintainer.
const (
	DefaultMaint = "tillwatch maintainers <packages@tillwatch.invalid>"
	Homepage     = "https://github.com/tillwatch/tillwatch"
	section      = "admin"
)

// The binaries (in Options.BinDir) and the build tag of a static YARA link.
const (
	sensorBinary  = "tillwatch-sensor"
	collectorBin  = "tillwatch-collector"
	cliBinary     = "tillwatch"
	yaraStaticTag = "yara_static"
)

// Options say what to package and where to put it.
type Options struct {
	// BinDir holds tillwatch, tillwatch-sensor and tillwatch-collector.
	BinDir string
	// OutDir receives the .deb files (created if missing).
	OutDir string
	// Version is buildinfo.Version, as the binaries were stamped; it becomes
	// the Debian version through DebVersion.
	Version string
	// Maintainer is the Maintainer field (default DefaultMaint).
	Maintainer string
	// AllowNoYARA packages a sensor built without cgo (no YARA); only for
	// tests and development builds.
	AllowNoYARA bool
	// MTime stamps every file; zero takes SOURCE_DATE_EPOCH, else now.
	MTime time.Time
	// Compression of data.tar: "" is gzip at level 9 (what releases use);
	// nfpm also takes gzip:N, xz, zstd and none.
	Compression string
}

// Built is one package written to disk.
type Built struct {
	Name    string // package name
	Path    string // the .deb file
	Version string // Debian version
	Arch    string // Debian architecture
}

// file is one regular file of a package.
type file struct {
	src  string      // name in the package's deploy FS, or a binary in BinDir
	dst  string      // installed path
	mode fs.FileMode // installed mode
	conf bool        // a conffile: dpkg never overwrites an edited one
	bin  bool        // src is in BinDir, not in the deploy FS
}

// spec describes one package.
type spec struct {
	name, summary, description string
	deploy                     fs.FS // unit, configuration and scripts
	files                      []file
	scripts                    bool // postinst, prerm and postrm from deploy
	depends                    []string
	recommends                 []string
}

// specs are the three packages. The CLI is a package of its own so that a
// host with both the sensor and the collector (or an analyst's laptop with
// neither) installs it once.
func specs(version string) []spec {
	cli := CLIPackage + " (= " + version + ")"
	return []spec{
		{
			name:    SensorPackage,
			summary: "tillwatch endpoint sensor for retail tills",
			description: "Watches processes, remote-management agents and files on a till, stops\n" +
				"supply-chain attacks locally and ships alerts to a tillwatch collector.\n" +
				"Runs as the systemd service tillwatch-sensor; configuration in\n" +
				"/etc/tillwatch/sensor.yaml, state in /var/lib/tillwatch.",
			deploy: sensordeploy.Files,
			files: []file{
				{src: sensorBinary, dst: BinDir + "/" + sensorBinary, mode: 0o755, bin: true},
				{src: sensordeploy.Config, dst: ConfigDir + "/" + sensordeploy.Config, mode: 0o600, conf: true},
				{src: sensordeploy.Unit, dst: UnitDir + "/" + sensordeploy.Unit, mode: 0o644},
			},
			scripts: true,
			// The CLI verifies a till (tillwatch simulate rmm-chain); YARA's
			// magic module, in rules you add, reads libmagic's database.
			recommends: []string{cli, "libmagic-mgc"},
		},
		{
			name:    CollectorPackage,
			summary: "tillwatch collector: receives and stores what tillwatch sensors send",
			description: "Enrols sensors, receives their alerts over HTTPS, stores them in SQLite\n" +
				"or Elasticsearch, raises fleet alerts and serves the CLI. Runs as the\n" +
				"systemd service tillwatch-collector under the system user tillwatch;\n" +
				"configuration in /etc/tillwatch/collector.yaml, data in\n" +
				"/var/lib/tillwatch-collector.",
			deploy: collectordeploy.Files,
			files: []file{
				{src: collectorBin, dst: BinDir + "/" + collectorBin, mode: 0o755, bin: true},
				// Readable by the tillwatch group: postinst sets the group
				// on the first install, once the user exists.
				{src: collectordeploy.Config, dst: ConfigDir + "/" + collectordeploy.Config, mode: 0o640, conf: true},
				{src: collectordeploy.Unit, dst: UnitDir + "/" + collectordeploy.Unit, mode: 0o644},
			},
			scripts:    true,
			depends:    []string{"passwd"}, // useradd, in postinst
			recommends: []string{cli},
		},
		{
			name:    CLIPackage,
			summary: "tillwatch command line: alerts, hosts, rules, scans, simulations",
			description: "The tillwatch CLI: query a collector's alerts and hosts, lint and test\n" +
				"rules, scan files with YARA, simulate attacks to verify a sensor, run\n" +
				"the demo.",
			files: []file{
				{src: cliBinary, dst: BinDir + "/" + cliBinary, mode: 0o755, bin: true},
			},
		},
	}
}

// Build writes the three packages into o.OutDir and returns them.
func Build(o Options) ([]Built, error) {
	if o.BinDir == "" || o.OutDir == "" {
		return nil, errors.New("packaging: BinDir and OutDir are required")
	}
	if o.Maintainer == "" {
		o.Maintainer = DefaultMaint
	}
	if o.MTime.IsZero() && os.Getenv("SOURCE_DATE_EPOCH") == "" {
		// One time for every file of every package (nfpm would otherwise
		// take the binaries' own mtimes); SOURCE_DATE_EPOCH, when set, is
		// applied by nfpm for reproducible builds.
		o.MTime = time.Now().UTC().Truncate(time.Second)
	}
	version, err := DebVersion(o.Version)
	if err != nil {
		return nil, err
	}
	arch, err := checkBinaries(o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("packaging: %w", err)
	}
	stage, err := os.MkdirTemp("", "tillwatch-deb-")
	if err != nil {
		return nil, fmt.Errorf("packaging: %w", err)
	}
	defer os.RemoveAll(stage)

	var out []Built
	for _, s := range specs(version) {
		b, err := buildOne(o, s, version, arch, filepath.Join(stage, s.name))
		if err != nil {
			return nil, fmt.Errorf("packaging %s: %w", s.name, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// checkBinaries verifies that every binary is a Linux Go binary of
// o.Version for one architecture, and that the sensor has static YARA. It
// returns the nfpm architecture.
func checkBinaries(o Options) (string, error) {
	arch := ""
	for _, name := range []string{sensorBinary, collectorBin, cliBinary} {
		path := filepath.Join(o.BinDir, name)
		t, err := readTarget(path)
		if err != nil {
			return "", fmt.Errorf("packaging: %w (run make build)", err)
		}
		if t.goos != "linux" {
			return "", fmt.Errorf("packaging: %s is built for %s, not linux", path, t.goos)
		}
		switch a := t.nfpmArch(); {
		case arch == "":
			arch = a
		case a != arch:
			return "", fmt.Errorf("packaging: %s is built for %s, the others for %s", path, a, arch)
		}
		if v, ok := stampedVersion(path); ok && v != o.Version {
			return "", fmt.Errorf("packaging: %s is version %q, packaging %q: rebuild the binaries (make build)", path, v, o.Version)
		}
		if name == sensorBinary && !o.AllowNoYARA && (!t.cgo || !slices.Contains(t.tags, yaraStaticTag)) {
			return "", fmt.Errorf("packaging: %s was built without statically linked YARA (cgo and -tags %s): build it with make build", path, yaraStaticTag)
		}
	}
	return arch, nil
}

func buildOne(o Options, s spec, version, arch, stage string) (Built, error) {
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return Built{}, err
	}
	info := &nfpm.Info{
		Name:          s.name,
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       section,
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Description:   s.summary + "\n" + s.description,
		Vendor:        "tillwatch",
		Homepage:      Homepage,
		License:       "Apache-2.0",
		MTime:         o.MTime,
		// Modes come from the specs; paths are taken literally.
		DisableGlobbing: true,
	}
	info.Deb.Compression = o.Compression
	info.Recommends = s.recommends
	depends := slices.Clone(s.depends)
	for _, f := range s.files {
		src := filepath.Join(o.BinDir, f.src)
		if !f.bin {
			var err error
			if src, err = stageFile(s.deploy, f.src, stage); err != nil {
				return Built{}, err
			}
		} else {
			libs, err := sharedLibDepends(src)
			if err != nil {
				return Built{}, err
			}
			depends = append(depends, libs...)
		}
		typ := files.TypeFile
		if f.conf {
			typ = files.TypeConfig
		}
		info.Contents = append(info.Contents, &files.Content{
			Source: src, Destination: f.dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Mode: f.mode, Owner: "root", Group: "root", MTime: o.MTime},
		})
	}
	slices.Sort(depends)
	info.Depends = slices.Compact(depends)
	if s.scripts {
		for dst, name := range map[*string]string{
			&info.Scripts.PostInstall: "postinst", &info.Scripts.PreRemove: "prerm", &info.Scripts.PostRemove: "postrm",
		} {
			p, err := stageFile(s.deploy, name, stage)
			if err != nil {
				return Built{}, err
			}
			*dst = p
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return Built{}, err
	}

	name := deb.Default.ConventionalFileName(info)
	tmp, err := os.CreateTemp(o.OutDir, "."+name+".*")
	if err != nil {
		return Built{}, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := deb.Default.Package(info, tmp); err != nil {
		tmp.Close()
		return Built{}, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return Built{}, err
	}
	if err := tmp.Close(); err != nil {
		return Built{}, err
	}
	path := filepath.Join(o.OutDir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Built{}, err
	}
	// ConventionalFileName mapped the architecture to Debian's name.
	debArch := strings.TrimSuffix(name[strings.LastIndex(name, "_")+1:], ".deb")
	return Built{Name: s.name, Path: path, Version: version, Arch: debArch}, nil
}

// stageFile copies name from fsys into dir: nfpm reads sources from disk.
func stageFile(fsys fs.FS, name, dir string) (string, error) {
	if fsys == nil {
		return "", fmt.Errorf("%s: no deploy files", name)
	}
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return "", err
	}
	return p, nil
}
