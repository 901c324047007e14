package rmm

import (
	"path"
	"strings"
)

// Matcher recognises the catalog's products on one operating system. It is
// immutable after NewMatcher and safe for concurrent use.
type Matcher struct {
	goos  string
	names map[string]*Product // lower-case process name -> product
	files map[string]*Product // exact install file -> product
	dirs  []dirEntry          // install directories, longest first
	svcs  map[string]*Product // lower-case service name -> product
}

type dirEntry struct {
	prefix string
	p      *Product
}

// NewMatcher indexes c for goos (a runtime.GOOS value).
func NewMatcher(c *Catalog, goos string) *Matcher {
	m := &Matcher{goos: goos, names: map[string]*Product{}, files: map[string]*Product{}, svcs: map[string]*Product{}}
	for i := range c.Products {
		p := &c.Products[i]
		oi := p.On(goos)
		if oi == nil {
			continue
		}
		for _, n := range oi.Processes {
			m.names[strings.ToLower(n)] = p
		}
		for _, s := range oi.Services {
			m.svcs[strings.ToLower(s)] = p
		}
		for _, pa := range oi.Paths {
			pa = m.norm(pa)
			if strings.HasSuffix(pa, m.sep()) {
				m.dirs = append(m.dirs, dirEntry{pa, p})
			} else {
				m.files[pa] = p
			}
		}
	}
	// Longest prefix first, so a product installed below another's
	// directory is named precisely.
	for i := 1; i < len(m.dirs); i++ {
		for j := i; j > 0 && len(m.dirs[j].prefix) > len(m.dirs[j-1].prefix); j-- {
			m.dirs[j], m.dirs[j-1] = m.dirs[j-1], m.dirs[j]
		}
	}
	return m
}

func (m *Matcher) sep() string {
	if m.goos == OSWindows {
		return `\`
	}
	return "/"
}

// norm makes Windows paths comparable (case-insensitive file system).
func (m *Matcher) norm(p string) string {
	if m.goos == OSWindows {
		return strings.ToLower(p)
	}
	return p
}

func (m *Matcher) base(p string) string {
	if i := strings.LastIndex(p, m.sep()); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Why a process or file matched.
const (
	ByName = "process name"
	ByPath = "install path"
)

// Process returns the product a process belongs to, by its executable's
// install path first (the stronger signal), then by its name or the
// executable's base name. It returns nil if none matches.
func (m *Matcher) Process(name, exe string) (*Product, string) {
	if exe != "" {
		if p := m.Path(exe); p != nil {
			return p, ByPath
		}
		if p, ok := m.names[strings.ToLower(m.base(exe))]; ok {
			return p, ByName
		}
	}
	if name != "" {
		if p, ok := m.names[strings.ToLower(name)]; ok {
			return p, ByName
		}
	}
	return nil, ""
}

// Path returns the product whose install path holds file p, or nil.
func (m *Matcher) Path(p string) *Product {
	if m.goos != OSWindows {
		p = path.Clean(p) // "/opt/x/../y" must not pass as /opt/x
	}
	p = m.norm(p)
	if pr, ok := m.files[p]; ok {
		return pr
	}
	for _, d := range m.dirs {
		if strings.HasPrefix(p, d.prefix) {
			return d.p
		}
	}
	return nil
}

// Service returns the product a service name belongs to, or nil.
func (m *Matcher) Service(name string) *Product {
	name = strings.TrimSuffix(strings.ToLower(name), ".service")
	return m.svcs[name]
}

// InstallPaths returns every install path of the catalog on this OS (for
// the scanner).
func (m *Matcher) InstallPaths() []string {
	out := make([]string, 0, len(m.files)+len(m.dirs))
	for f := range m.files {
		out = append(out, f)
	}
	for _, d := range m.dirs {
		out = append(out, d.prefix)
	}
	return out
}

// Services returns every service name of the catalog on this OS.
func (m *Matcher) Services() []string {
	out := make([]string, 0, len(m.svcs))
	for s := range m.svcs {
		out = append(out, s)
	}
	return out
}
