// Package rmm knows the remote-management (RMM) and remote-access tools a
// till may run: the catalog of products (rules/rmm/catalog.yaml) with, per
// operating system, the process names, install paths and service names that
// recognise each one; matching processes and files against it; and the
// baseline of approved agents' binaries kept in the state dir.
//
// The package does no I/O on its own except in Baseline (the state file) and
// Scanner (the periodic install-path scan); matching is pure and fast, so
// detectors call it on every exec.
package rmm

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// Kinds of product.
const (
	KindRMM          = "rmm"           // remote monitoring and management: runs scripts as SYSTEM/root
	KindRemoteAccess = "remote-access" // interactive remote control
)

// OS keys in the catalog, matching runtime.GOOS where one exists.
const (
	OSLinux   = "linux"
	OSWindows = "windows"
	OSMacOS   = "darwin"
)

// Product is one catalog entry.
type Product struct {
	// ID is the stable key operators name in rmm.approved (lowercase,
	// digits and dashes).
	ID     string `yaml:"id"`
	Name   string `yaml:"name"`
	Vendor string `yaml:"vendor,omitempty"`
	Kind   string `yaml:"kind"`
	// Aliases are other names an operator may use in rmm.approved.
	Aliases []string `yaml:"aliases,omitempty"`
	Linux   *OSInfo  `yaml:"linux,omitempty"`
	Windows *OSInfo  `yaml:"windows,omitempty"`
	Darwin  *OSInfo  `yaml:"darwin,omitempty"`
	// There is no "domains": the sensor sees no DNS queries, TLS SNI or
	// connections, so a list of domains would be data nothing reads
	// (docs/rules.md, "RMM catalog").
	// Reference is where the recognisers come from.
	Reference string `yaml:"reference,omitempty"`
}

// OSInfo is what recognises a product on one operating system.
type OSInfo struct {
	// Processes are process names (the executable's base name), compared
	// case-insensitively. Names a system also uses for other programs do not
	// belong here.
	Processes []string `yaml:"processes,omitempty"`
	// Paths are install paths: a path ending in a separator is a directory
	// (everything below it belongs to the product), anything else one file.
	Paths []string `yaml:"paths,omitempty"`
	// Services are service names (systemd units without ".service",
	// Windows service names, launchd labels).
	Services []string `yaml:"services,omitempty"`
}

// Catalog is a loaded, validated set of products.
type Catalog struct {
	Products []Product
	byID     map[string]*Product
}

type catalogFile struct {
	Products []Product `yaml:"products"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// Validate reports every problem of the product at once.
func (p *Product) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if !idPattern.MatchString(p.ID) {
		bad("id %q: want lowercase letters, digits and dashes", p.ID)
	}
	if p.Name == "" {
		bad("name is required")
	}
	if p.Kind != KindRMM && p.Kind != KindRemoteAccess {
		bad("kind %q: want %s or %s", p.Kind, KindRMM, KindRemoteAccess)
	}
	for _, a := range p.Aliases {
		if !idPattern.MatchString(a) {
			bad("alias %q: want lowercase letters, digits and dashes", a)
		}
	}
	if p.Linux == nil && p.Windows == nil && p.Darwin == nil {
		bad("at least one of linux, windows, darwin is required")
	}
	for goos, oi := range p.osInfos() {
		if oi == nil {
			continue
		}
		if len(oi.Processes) == 0 && len(oi.Paths) == 0 && len(oi.Services) == 0 {
			bad("%s: give processes, paths or services", goos)
		}
		for _, n := range oi.Processes {
			if n == "" || strings.ContainsAny(n, `/\`) {
				bad("%s: process %q must be a bare file name", goos, n)
			}
		}
		for _, pa := range oi.Paths {
			if !absFor(goos, pa) {
				bad("%s: path %q is not absolute for %s", goos, pa, goos)
			}
			if goos != OSWindows && (strings.Contains(pa, "/../") || strings.HasSuffix(pa, "/..")) {
				bad("%s: path %q contains ..", goos, pa)
			}
		}
		for _, s := range oi.Services {
			if s == "" || strings.ContainsAny(s, `/\`) {
				bad("%s: service %q must be a bare name", goos, s)
			}
		}
	}
	if p.ID != "" {
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("product %s: %w", p.ID, err)
		}
		return nil
	}
	return errors.Join(errs...)
}

func (p *Product) osInfos() map[string]*OSInfo {
	return map[string]*OSInfo{OSLinux: p.Linux, OSWindows: p.Windows, OSMacOS: p.Darwin}
}

// On returns the recognisers for goos, or nil.
func (p *Product) On(goos string) *OSInfo {
	switch goos {
	case OSLinux:
		return p.Linux
	case OSWindows:
		return p.Windows
	case OSMacOS:
		return p.Darwin
	}
	return nil
}

// absFor reports whether pa is absolute on goos: Windows paths need a drive
// letter (C:\...) or an environment root (%ProgramData%\...).
func absFor(goos, pa string) bool {
	if goos == OSWindows {
		return len(pa) > 3 && (pa[1] == ':' && pa[2] == '\\' || pa[0] == '%')
	}
	return path.IsAbs(pa)
}

// LoadCatalog reads every *.yaml file under dir of fsys strictly and
// validates each product. Ids and aliases must be unique across files.
func LoadCatalog(fsys fs.FS, dir string) (*Catalog, error) {
	files, err := cfgfile.DecodeGlob[catalogFile](fsys, path.Join(dir, "catalog*.yaml"))
	c := &Catalog{byID: map[string]*Product{}}
	errs := []error{err}
	seen := map[string]string{}
	for _, f := range files {
		name := f.Name
		for _, p := range f.Value.Products {
			if err := p.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			dup := false
			for _, k := range append([]string{p.ID}, p.Aliases...) {
				if prev, ok := seen[k]; ok {
					errs = append(errs, fmt.Errorf("%s: product %s: name %q already used in %s", name, p.ID, k, prev))
					dup = true
				}
			}
			if dup {
				continue
			}
			for _, k := range append([]string{p.ID}, p.Aliases...) {
				seen[k] = name
			}
			c.Products = append(c.Products, p)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range c.Products {
		p := &c.Products[i]
		c.byID[p.ID] = p
		for _, a := range p.Aliases {
			c.byID[a] = p
		}
	}
	return c, nil
}

// Merge adds the products of o (extra rule folders); an id already known is
// an error.
func (c *Catalog) Merge(o *Catalog) error {
	var errs []error
	for _, p := range o.Products {
		for _, k := range append([]string{p.ID}, p.Aliases...) {
			if _, ok := c.byID[k]; ok {
				errs = append(errs, fmt.Errorf("product %s: name %q already in the catalog", p.ID, k))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range o.Products {
		c.Products = append(c.Products, p)
	}
	c.byID = map[string]*Product{}
	for i := range c.Products {
		p := &c.Products[i]
		c.byID[p.ID] = p
		for _, a := range p.Aliases {
			c.byID[a] = p
		}
	}
	return nil
}

// Product returns the product with id or alias name.
func (c *Catalog) Product(name string) (*Product, bool) {
	p, ok := c.byID[strings.ToLower(name)]
	return p, ok
}

// Resolve maps the names an operator approved to product ids, reporting
// every unknown name at once.
func (c *Catalog) Resolve(names []string) (map[string]bool, error) {
	out := map[string]bool{}
	var unknown []string
	for _, n := range names {
		p, ok := c.Product(n)
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		out[p.ID] = true
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown product(s) %s (see `tillwatch rules lint` or rules/rmm/catalog.yaml for ids)", strings.Join(unknown, ", "))
	}
	return out, nil
}

// IDs returns every product id, sorted.
func (c *Catalog) IDs() []string {
	ids := make([]string, 0, len(c.Products))
	for _, p := range c.Products {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}
