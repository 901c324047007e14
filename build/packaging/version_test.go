package packaging

import (
	"os/exec"
	"testing"
)

func TestDebVersion(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+git4.gabc1234.dirty"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"0.1.0-dev", "0.1.0~dev"},
		{"v1.2.3+meta", "1.2.3+meta"},
		{"abc1234", "0.0.0~gitabc1234"},
		{"f4dc7d1-dirty", "0.0.0~gitf4dc7d1.dirty"},
		{"dev", "0.0.0~dev"},
		{"my build/7", "0.0.0~my.build.7"},
	}
	for _, tc := range tests {
		got, err := DebVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("DebVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := DebVersion(" "); err == nil {
		t.Error("DebVersion of a blank version succeeded")
	}
}

// TestDebVersionOrder checks with dpkg itself that the mapping sorts the way
// releases do: a pre-release before its release, commits after a tag after it.
func TestDebVersionOrder(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	t.Parallel()
	order := []string{"dev", "abc1234", "0.1.0-dev", "v0.1.0", "v1.2.3-rc1", "v1.2.3", "v1.2.3-4-gabc1234", "v1.2.3-4-gabc1234-dirty", "v1.2.4"}
	for i := 1; i < len(order); i++ {
		a, _ := DebVersion(order[i-1])
		b, _ := DebVersion(order[i])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg does not sort %s (%s) before %s (%s)", a, order[i-1], b, order[i])
		}
	}
}
