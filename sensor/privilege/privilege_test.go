package privilege

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEffectiveFromFixture(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		capEff  string
		hasKill bool
		wantErr bool
	}{
		{"root", "000001ffffffffff", true, false},
		{"unprivileged", "0000000000000000", false, false},
		{"kill only", "0000000000000020", true, false},
		{"garbage", "zz", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
				t.Fatal(err)
			}
			status := "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t" + tc.capEff + "\n"
			if err := os.WriteFile(filepath.Join(root, "self", "status"), []byte(status), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Effective(root)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want parse error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Has(CapKill) != tc.hasKill {
				t.Errorf("Has(CAP_KILL) = %v, want %v", s.Has(CapKill), tc.hasKill)
			}
			err = s.Missing([]int{CapKill, CapNetAdmin}, "enforce mode")
			if tc.name == "root" && err != nil {
				t.Errorf("root misses nothing, got %v", err)
			}
			if tc.name == "unprivileged" && (err == nil || !strings.Contains(err.Error(), "CAP_KILL") || !strings.Contains(err.Error(), "CAP_NET_ADMIN")) {
				t.Errorf("want both capabilities named, got %v", err)
			}
		})
	}
}
