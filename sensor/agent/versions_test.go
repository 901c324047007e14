package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
)

var hex12 = regexp.MustCompile(`^[0-9a-f]{12}$`)

func TestConfigVersion(t *testing.T) {
	t.Parallel()
	base := func() config.Config {
		c := config.Default()
		c.Labels = map[string]string{"store": "0042", "region": "north", "lane": "3"}
		c.Rules = []string{"/etc/tillwatch/rules.d"}
		return c
	}
	tests := []struct {
		name   string
		change func(c *config.Config)
		same   bool
	}{
		{"unchanged", func(*config.Config) {}, true},
		{"labels built in another order", func(c *config.Config) {
			c.Labels = map[string]string{}
			for _, k := range []string{"lane", "store", "region"} {
				c.Labels[k] = base().Labels[k]
			}
		}, true},
		{"mode", func(c *config.Config) { c.Mode = "monitor" }, false},
		{"one label value", func(c *config.Config) { c.Labels["lane"] = "4" }, false},
		{"nested duration", func(c *config.Config) { c.Collector.HeartbeatInterval += time.Second }, false},
		{"rule folder added", func(c *config.Config) { c.Rules = append(c.Rules, "/srv/rules") }, false},
		{"labels removed", func(c *config.Config) { c.Labels = nil }, false},
	}
	want, err := configVersion(base())
	if err != nil {
		t.Fatal(err)
	}
	if !hex12.MatchString(want) {
		t.Fatalf("configVersion = %q, want 12 hex digits", want)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base()
			tt.change(&c)
			got, err := configVersion(c)
			if err != nil {
				t.Fatal(err)
			}
			if (got == want) != tt.same {
				t.Errorf("configVersion = %s, base %s; want same=%v", got, want, tt.same)
			}
		})
	}
}

func TestConfigVersionNaN(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.YARA.SweepCPU = math.NaN()
	if v, err := configVersion(c); err == nil {
		t.Errorf("configVersion(NaN sweep_cpu) = %q, want an error", v)
	}
}

// TestConfigMarshalsDeterministically guards configVersion against a future
// config field that encoding/json skips or encodes in an unstable order: an
// unexported or json:"-" field, a pointer, an interface, a func, a map whose
// keys are not strings.
func TestConfigMarshalsDeterministically(t *testing.T) {
	t.Parallel()
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		case reflect.Slice, reflect.Array:
			walk(path+"[]", typ.Elem())
		case reflect.Map:
			if typ.Key().Kind() != reflect.String {
				t.Errorf("%s: map key %s", path, typ.Key())
			}
			walk(path+"[k]", typ.Elem())
		case reflect.Struct:
			for i := range typ.NumField() {
				f := typ.Field(i)
				if !f.IsExported() || f.Tag.Get("json") == "-" {
					t.Errorf("%s.%s is left out of json.Marshal and so of config_version", path, f.Name)
					continue
				}
				walk(path+"."+f.Name, f.Type)
			}
		default:
			t.Errorf("%s: %s does not marshal deterministically", path, typ.Kind())
		}
	}
	walk("Config", reflect.TypeOf(config.Config{}))
}

// file is one file of a rule tree, written in slice order; link, if set,
// makes it a symlink to a regular file holding content.
type file struct {
	path, content string
	link          bool
}

func writeTree(t *testing.T, files []file) string {
	t.Helper()
	dir, aside := t.TempDir(), t.TempDir()
	for i, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if !f.link {
			if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		target := filepath.Join(aside, "target"+string(rune('a'+i)))
		if err := os.WriteFile(target, []byte(f.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Skipf("symlinks: %v", err)
		}
	}
	return dir
}

func TestRulesVersionBuiltin(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "..", "rules", "builtin.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if got, want := rules.ArchiveSHA256(), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("rules.ArchiveSHA256() = %s, want the digest of rules/builtin.tar.gz %s", got, want)
	}
	got, err := rulesVersion(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "builtin-" + rules.ArchiveSHA256()[:12]; got != want {
		t.Errorf("rulesVersion(nil) = %q, want %q", got, want)
	}
}

func TestRulesVersion(t *testing.T) {
	t.Parallel()
	base := []file{
		{"exec/exec-location.yaml", "rules: [a]\n", false},
		{"sigma/proc.yml", "title: x\n", false},
		{"a.txt", "readme", false},
		{"a/x", "nested", false},
	}
	tests := []struct {
		name  string
		other []file
		same  bool
	}{
		{"same content in another folder", base, true},
		{"files created in another order", []file{base[3], base[1], base[2], base[0]}, true},
		{"symlink to a file with the same content", []file{base[0], base[1], base[2], {"a/x", "nested", true}}, true},
		{"one byte changed", []file{{"exec/exec-location.yaml", "rules: [b]\n", false}, base[1], base[2], base[3]}, false},
		{"file renamed", []file{base[0], {"sigma/proc2.yml", "title: x\n", false}, base[2], base[3]}, false},
		{"empty file added", append(append([]file{}, base...), file{"yara/empty.yar", "", false}), false},
		{"file removed", base[:3], false},
		{"content moved between files", []file{base[0], base[1], {"a.txt", "readmenested", false}, {"a/x", "", false}}, false},
	}
	want, err := rulesVersion([]string{writeTree(t, base)})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^builtin-[0-9a-f]{12}\+[0-9a-f]{12}$`).MatchString(want) {
		t.Fatalf("rulesVersion = %q, want builtin-<12 hex>+<12 hex>", want)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rulesVersion([]string{writeTree(t, tt.other)})
			if err != nil {
				t.Fatal(err)
			}
			if (got == want) != tt.same {
				t.Errorf("rulesVersion = %s, base %s; want same=%v", got, want, tt.same)
			}
		})
	}
}

func TestRulesVersionFolders(t *testing.T) {
	t.Parallel()
	d1 := writeTree(t, []file{{"exec/a.yaml", "one", false}})
	d2 := writeTree(t, []file{{"exec/a.yaml", "two", false}})
	empty := t.TempDir()
	v := func(dirs ...string) string {
		t.Helper()
		s, err := rulesVersion(dirs)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Later folders may override earlier ones, so order is part of the set.
	if v(d1, d2) == v(d2, d1) {
		t.Error("folder order does not change the version")
	}
	builtin := v()
	if e := v(empty); e == builtin || !strings.HasPrefix(e, builtin+"+") {
		t.Errorf("an empty extra folder gives %q, want %q+<12 hex>", e, builtin)
	}
	if _, err := rulesVersion([]string{filepath.Join(empty, "missing")}); err == nil {
		t.Error("a missing rule folder gives no error")
	}
}

func TestRulesVersionLimits(t *testing.T) {
	t.Parallel()
	three := []file{{"a", "1234", false}, {"b", "5678", false}, {"c", "9", false}}
	dir := writeTree(t, three)
	big := writeTree(t, []file{{"a", "1234", false}, {"b", "0123456789", false}, {"c", "9", false}})
	bigSameSize := writeTree(t, []file{{"a", "1234", false}, {"b", "9876543210", false}, {"c", "9", false}})
	bigOtherSize := writeTree(t, []file{{"a", "1234", false}, {"b", "012345678", false}, {"c", "9", false}})
	tests := []struct {
		name    string
		dirs    []string
		lim     ruleHashLimits
		partial bool
	}{
		{"within limits", []string{dir}, ruleHashLimits{file: 100, files: 3, bytes: 100}, false},
		{"file count reached", []string{dir}, ruleHashLimits{file: 100, files: 2, bytes: 100}, true},
		{"file count reached in the second folder", []string{dir, dir}, ruleHashLimits{file: 100, files: 4, bytes: 100}, true},
		{"byte budget reached", []string{dir}, ruleHashLimits{file: 100, files: 10, bytes: 8}, true},
		{"byte budget used up by the last file", []string{dir}, ruleHashLimits{file: 100, files: 10, bytes: 9}, false},
		{"large file counted by size", []string{big}, ruleHashLimits{file: 8, files: 10, bytes: 100}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := rulesVersionWith(tt.dirs, tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(v, "+partial-"); got != tt.partial {
				t.Errorf("rulesVersion = %q, want partial=%v", v, tt.partial)
			}
		})
	}
	t.Run("over-size file: size counts, content does not", func(t *testing.T) {
		t.Parallel()
		lim := ruleHashLimits{file: 8, files: 10, bytes: 100}
		v := func(dir string) string {
			s, err := rulesVersionWith([]string{dir}, lim)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if v(big) != v(bigSameSize) {
			t.Error("content of a file over the size limit changed the version")
		}
		if v(big) == v(bigOtherSize) {
			t.Error("size of a file over the size limit did not change the version")
		}
	})
}
