package cfgfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

type sample struct {
	Mode  string `yaml:"mode"`
	Inner struct {
		URL      string        `yaml:"url"`
		Interval time.Duration `yaml:"interval"`
	} `yaml:"inner"`
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		wantErr []string
	}{
		{"empty means defaults", "", nil},
		{"valid", "mode: x\ninner:\n  url: y\n  interval: 2s\n", nil},
		{"typo names the dotted key and line", "mode: x\ninner:\n  ulr: y\n", []string{"inner.ulr (line 3): unknown key"}},
		{"wrong type names the key", "inner:\n  interval: soon\n", []string{"inner.interval (line 2)"}},
		{"every problem at once", "mdoe: x\ninner:\n  ulr: y\n", []string{"mdoe (line 1)", "inner.ulr (line 3)"}},
		{"two documents", "mode: x\n---\nmode: y\n", []string{"more than one YAML document"}},
		{"not yaml", "mode: [\n", []string{"config t.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var s sample
			err := Decode("t.yaml", []byte(tc.yaml), &s)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "cfgfile.sample") {
				t.Errorf("error leaks the Go type name: %v", err)
			}
		})
	}
}

func TestLoadBounds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := Load(big, &s); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
	if err := Load(filepath.Join(dir, "missing.yaml"), &s); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestExitCodesAndOneLine(t *testing.T) {
	t.Parallel()
	if ExitCode(nil) != 0 || ExitCode(errors.New("x")) != 1 || ExitCode(Usagef("bad %s", "key")) != 2 {
		t.Error("exit code mapping broken")
	}
	if got := OneLine(errors.Join(errors.New("a: x"), errors.New("b: y"))); got != "a: x; b: y" {
		t.Errorf("OneLine = %q", got)
	}
}

func TestDecodeGlobKeepsGoodFilesAndReportsBadOnes(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"r/a.yaml": {Data: []byte("mode: x\n")},
		"r/b.yaml": {Data: []byte("mdoe: x\n")},
		"r/c.txt":  {Data: []byte("not matched")},
		"r/d.yaml": {Data: []byte("mode: y\n")},
	}
	files, err := DecodeGlob[sample](fsys, "r/*.yaml")
	if len(files) != 2 || files[0].Name != "r/a.yaml" || files[1].Value.Mode != "y" {
		t.Errorf("decoded %+v", files)
	}
	if err == nil || !strings.Contains(err.Error(), "r/b.yaml") || !strings.Contains(err.Error(), "mdoe") {
		t.Errorf("error %v does not name the bad file and key", err)
	}
}
