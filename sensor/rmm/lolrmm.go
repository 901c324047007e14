package rmm

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// This file converts the LOLRMM catalogue (one YAML file per tool, as
// published at lolrmm.io) into catalog products. What the sensor can
// recognise a tool by is taken: executable names, install paths and
// install-time files per OS, Windows service names. The rest is reported
// as not taken, with the reason: registry keys and event-log entries (the
// sensor reads neither), network domains and ports (the sensor sees no
// DNS, SNI or connections), hashes and signers (the catalog matches by
// name and path), and paths with wildcards or home-relative paths (install
// paths are fixed prefixes).

// LOLRMMTool is one LOLRMM YAML file. Decoding is lenient on purpose: the
// catalogue's schema allows several shapes (PEMetadata is a map or a list,
// Free a bool or a string) and grows fields; unknown keys are ignored.
type LOLRMMTool struct {
	Name        string `yaml:"Name"`
	Category    string `yaml:"Category"`
	Description string `yaml:"Description"`
	Author      string `yaml:"Author"`
	Details     struct {
		Website           string    `yaml:"Website"`
		PEMetadata        yaml.Node `yaml:"PEMetadata"`
		SupportedOS       []string  `yaml:"SupportedOS"`
		InstallationPaths []string  `yaml:"InstallationPaths"`
	} `yaml:"Details"`
	Artifacts struct {
		Disk []struct {
			File string `yaml:"File"`
			OS   string `yaml:"OS"`
		} `yaml:"Disk"`
		EventLog []struct {
			EventID     any    `yaml:"EventID"`
			ServiceName string `yaml:"ServiceName"`
		} `yaml:"EventLog"`
		Registry []yaml.Node `yaml:"Registry"`
		Network  []struct {
			Domains []string `yaml:"Domains"`
			Ports   []any    `yaml:"Ports"`
		} `yaml:"Network"`
		Other []yaml.Node `yaml:"Other"`
	} `yaml:"Artifacts"`
	Detections []yaml.Node `yaml:"Detections"`
	FileHashes yaml.Node   `yaml:"FileHashes"`
	References []string    `yaml:"References"`
}

type peMeta struct {
	Filename         string `yaml:"Filename"`
	OriginalFileName string `yaml:"OriginalFileName"`
}

// LOLRMMResult is what became of one LOLRMM file.
type LOLRMMResult struct {
	File     string
	Name     string
	Product  *Product // nil: not taken
	Taken    []string // what recognisers came from
	NotTaken []string // what was left and why
	Reason   string   // why the whole tool was not taken ("" if taken)
}

// MaxLOLRMMFile bounds one catalogue file.
const MaxLOLRMMFile = 1 << 20

// genericNames are executable names too common to mean one product: listed
// in LOLRMM for some tools, they would make every program of that name an
// RMM agent.
var genericNames = map[string]bool{
	"agent.exe": true, "client.exe": true, "service.exe": true, "setup.exe": true, "update.exe": true,
	"updater.exe": true, "install.exe": true, "installer.exe": true, "launcher.exe": true, "server.exe": true,
	"helper.exe": true, "remote.exe": true, "host.exe": true, "main.exe": true, "app.exe": true, "run.exe": true,
	"svchost.exe": true, "rundll32.exe": true, "msiexec.exe": true, "cmd.exe": true, "powershell.exe": true,
	"agent": true, "client": true, "server": true, "service": true, "setup": true, "update": true, "ssh": true,
	"sshd": true, "sh": true, "bash": true, "python": true, "python3": true, "java": true, "node": true, "tmux": true,
}

var nonID = regexp.MustCompile(`[^a-z0-9]+`)

// LOLRMMID is the catalog id a tool's name becomes.
func LOLRMMID(name string) string {
	id := strings.Trim(nonID.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(id) > 63 {
		id = strings.TrimRight(id[:63], "-")
	}
	if len(id) < 2 {
		id = "tool-" + id
	}
	return id
}

// lolrmmOS maps SupportedOS and Disk OS values to catalog OS keys.
func lolrmmOS(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "linux":
		return OSLinux
	case "windows":
		return OSWindows
	case "mac", "macos", "osx", "mac os":
		return OSMacOS
	}
	return ""
}

// ConvertLOLRMM converts every *.yaml / *.yml file under dir of fsys.
// Products whose id, an alias or a recogniser is already in known (the
// built-in catalog) are not taken: the sensor already recognises them.
func ConvertLOLRMM(fsys fs.FS, dir string, known *Catalog) ([]LOLRMMResult, error) {
	var files []string
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := path.Ext(p); !d.IsDir() && d.Type().IsRegular() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []LOLRMMResult
	ids := map[string]string{}
	for _, f := range files {
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		res := ConvertLOLRMMFile(f, raw)
		if res.Product != nil {
			p := res.Product
			if by := coveredBy(known, p); by != "" {
				res.Reason = "already in the built-in catalog as " + by
				res.Product = nil
			} else if prev, dup := ids[p.ID]; dup {
				res.Reason = fmt.Sprintf("id %s already taken from %s", p.ID, prev)
				res.Product = nil
			} else {
				ids[p.ID] = f
			}
		}
		out = append(out, res)
	}
	return out, nil
}

// coveredBy names the known product p duplicates (same id or alias, or a
// shared process name or install path), "" if none.
func coveredBy(known *Catalog, p *Product) string {
	if known == nil {
		return ""
	}
	if k, ok := known.Product(p.ID); ok {
		return k.ID
	}
	for _, k := range known.Products {
		for goos, oi := range p.osInfos() {
			ko := k.On(goos)
			if oi == nil || ko == nil {
				continue
			}
			for _, n := range oi.Processes {
				if slices.ContainsFunc(ko.Processes, func(x string) bool { return strings.EqualFold(x, n) }) {
					return k.ID
				}
			}
			for _, pa := range oi.Paths {
				if slices.ContainsFunc(ko.Paths, func(x string) bool { return strings.EqualFold(x, pa) }) {
					return k.ID
				}
			}
		}
	}
	return ""
}

// ConvertLOLRMMFile converts one LOLRMM file.
func ConvertLOLRMMFile(file string, raw []byte) LOLRMMResult {
	res := LOLRMMResult{File: file}
	if len(raw) > MaxLOLRMMFile {
		res.Reason = fmt.Sprintf("larger than %d bytes", MaxLOLRMMFile)
		return res
	}
	var t LOLRMMTool
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&t); err != nil {
		res.Reason = "does not parse: " + err.Error()
		return res
	}
	res.Name = strings.TrimSpace(t.Name)
	if res.Name == "" {
		res.Reason = "no Name"
		return res
	}
	p := &Product{ID: LOLRMMID(res.Name), Name: res.Name, Kind: KindRemoteAccess}
	if strings.EqualFold(t.Category, "RMM") {
		p.Kind = KindRMM
	}
	p.Reference = t.Details.Website
	if p.Reference == "" && len(t.References) > 0 {
		p.Reference = t.References[0]
	}
	supported := map[string]bool{}
	for _, s := range t.Details.SupportedOS {
		if os := lolrmmOS(s); os != "" {
			supported[os] = true
		}
	}
	infos := map[string]*OSInfo{}
	info := func(goos string) *OSInfo {
		if infos[goos] == nil {
			infos[goos] = &OSInfo{}
		}
		return infos[goos]
	}
	skip := func(f string, a ...any) { res.NotTaken = append(res.NotTaken, fmt.Sprintf(f, a...)) }
	addProc := func(goos, name, from string) {
		name = strings.TrimSpace(name)
		low := strings.ToLower(name)
		switch {
		case name == "":
		case genericNames[low]:
			skip("%s %s: too generic a name to mean this product", from, name)
		case strings.ContainsAny(name, `*?/\`) || strings.ContainsAny(name, " "):
			skip("%s %q: not a plain executable name", from, name)
		default:
			oi := info(goos)
			if !slices.ContainsFunc(oi.Processes, func(x string) bool { return strings.EqualFold(x, name) }) {
				oi.Processes = append(oi.Processes, name)
				res.Taken = append(res.Taken, fmt.Sprintf("%s process %s (%s)", goos, name, from))
			}
		}
	}
	addPath := func(goos, pa, from string) {
		pa = strings.TrimSpace(pa)
		dir := false
		// "C:\Program Files\X\*" and "/opt/x/*" mean the folder.
		for _, suf := range []string{`\*`, `/*`, `\*.*`} {
			if strings.HasSuffix(pa, suf) {
				pa, dir = strings.TrimSuffix(pa, suf), true
			}
		}
		sep := "/"
		if goos == OSWindows {
			sep = `\`
		}
		if goos == OSMacOS && strings.HasSuffix(strings.ToLower(pa), ".app") {
			dir = true // a bundle is a folder
		}
		switch {
		case strings.ContainsAny(pa, "*?"):
			skip("%s path %s: wildcards are not supported in install paths", goos, pa)
			return
		case strings.HasPrefix(pa, "~"):
			skip("%s path %s: relative to a user's home", goos, pa)
			return
		case !absFor(goos, pa):
			skip("%s path %s: not absolute", goos, pa)
			return
		case goos != OSWindows && (strings.Contains(pa, "/../") || strings.HasSuffix(pa, "/..")):
			skip("%s path %s: contains ..", goos, pa)
			return
		}
		if dir && !strings.HasSuffix(pa, sep) {
			pa += sep
		}
		oi := info(goos)
		if !slices.ContainsFunc(oi.Paths, func(x string) bool { return strings.EqualFold(x, pa) }) {
			oi.Paths = append(oi.Paths, pa)
			res.Taken = append(res.Taken, fmt.Sprintf("%s path %s (%s)", goos, pa, from))
		}
	}

	// Executable names: PEMetadata (a map or a list of maps).
	var pes []peMeta
	switch t.Details.PEMetadata.Kind {
	case yaml.MappingNode:
		var pm peMeta
		if t.Details.PEMetadata.Decode(&pm) == nil {
			pes = append(pes, pm)
		}
	case yaml.SequenceNode:
		_ = t.Details.PEMetadata.Decode(&pes)
	}
	for _, pm := range pes {
		for _, n := range []string{pm.Filename, pm.OriginalFileName} {
			n = strings.TrimSpace(n)
			switch {
			case n == "":
			case strings.HasSuffix(strings.ToLower(n), ".exe"):
				addProc(OSWindows, n, "PEMetadata")
			case strings.Contains(n, "."):
				skip("PEMetadata %s: not an executable name", n)
			default:
				// An extensionless name is a Unix executable.
				for _, goos := range []string{OSLinux, OSMacOS} {
					if supported[goos] {
						addProc(goos, n, "PEMetadata")
					}
				}
			}
		}
	}
	// Install paths: an absolute path names its OS by its form; a bare
	// name is an executable.
	for _, pa := range t.Details.InstallationPaths {
		pa = strings.TrimSpace(pa)
		switch {
		case pa == "":
		case len(pa) > 2 && pa[1] == ':' || strings.HasPrefix(pa, "%") || strings.Contains(pa, `\`):
			addPath(OSWindows, pa, "InstallationPaths")
		case strings.HasPrefix(pa, "/Applications/") || strings.HasPrefix(pa, "/Library/"):
			addPath(OSMacOS, pa, "InstallationPaths")
		case strings.HasPrefix(pa, "/") || strings.HasPrefix(pa, "~"):
			switch {
			case supported[OSLinux]:
				addPath(OSLinux, pa, "InstallationPaths")
			case supported[OSMacOS]:
				addPath(OSMacOS, pa, "InstallationPaths")
			default:
				skip("path %s: a Unix path for a tool that lists neither Linux nor Mac", pa)
			}
		case strings.HasSuffix(strings.ToLower(pa), ".exe"):
			addProc(OSWindows, pa, "InstallationPaths")
		case !strings.Contains(pa, "."):
			// A bare extensionless name may be a socket or a marker
			// file as well as a program: only PEMetadata names are
			// taken as Unix executables.
			skip("InstallationPaths %s: a bare name without a path (not taken as an executable)", pa)
		default:
			skip("InstallationPaths %s: neither a path nor an executable name", pa)
		}
	}
	// Files the tool leaves on disk, with their OS.
	for _, d := range t.Artifacts.Disk {
		goos := lolrmmOS(d.OS)
		if goos == "" {
			skip("Disk %s: OS %q is not one the sensor runs on", d.File, d.OS)
			continue
		}
		addPath(goos, d.File, "Artifacts.Disk")
	}
	for _, e := range t.Artifacts.EventLog {
		if s := strings.TrimSpace(e.ServiceName); s != "" && !strings.ContainsAny(s, `/\`) {
			oi := info(OSWindows)
			if !slices.Contains(oi.Services, s) {
				oi.Services = append(oi.Services, s)
				res.Taken = append(res.Taken, fmt.Sprintf("windows service %s (Artifacts.EventLog)", s))
			}
		}
	}
	if n := len(t.Artifacts.EventLog); n > 0 {
		skip("EventLog: %d entries: the sensor reads no Windows event log (service names taken)", n)
	}
	if n := len(t.Artifacts.Registry); n > 0 {
		skip("Registry: %d keys: the sensor reads no registry", n)
	}
	domains, ports := 0, 0
	for _, n := range t.Artifacts.Network {
		domains += len(n.Domains)
		ports += len(n.Ports)
	}
	if domains+ports > 0 {
		skip("Network: %d domains, %d ports: the sensor sees no DNS, TLS SNI or connections", domains, ports)
	}
	if n := len(t.Artifacts.Other); n > 0 {
		skip("Other: %d artifacts: free-form", n)
	}
	if n := len(t.Detections); n > 0 {
		skip("Detections: %d Sigma rules: bring them with `tillwatch rules import sigma`", n)
	}
	if !t.FileHashes.IsZero() {
		skip("FileHashes: the catalog recognises by name and path, not hash or signer")
	}
	for goos, oi := range infos {
		switch goos {
		case OSLinux:
			p.Linux = oi
		case OSWindows:
			p.Windows = oi
		case OSMacOS:
			p.Darwin = oi
		}
	}
	if len(infos) == 0 {
		res.Reason = "nothing the sensor can recognise it by (no executable name or fixed install path)"
		return res
	}
	if err := p.Validate(); err != nil {
		res.Reason = err.Error()
		return res
	}
	res.Product = p
	return res
}

// MarshalCatalog renders products as a catalog file the loader reads.
func MarshalCatalog(header string, ps []Product) ([]byte, error) {
	var b bytes.Buffer
	for _, l := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		b.WriteString("# " + l + "\n")
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(catalogFile{Products: ps}); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}
