package cfgfile

import (
	"slices"
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	t.Parallel()
	type inner struct {
		URL     string        `yaml:"url"`
		Every   time.Duration `yaml:"every"`
		skipped int
	}
	type cfg struct {
		Mode   string            `yaml:"mode"`
		Labels map[string]string `yaml:"labels,omitempty"`
		In     inner             `yaml:"collector"`
		Hidden string            `yaml:"-"`
		NoTag  string
	}
	want := []string{"mode", "labels", "collector.url", "collector.every"}
	for _, v := range []any{cfg{}, &cfg{}} {
		if got := Keys(v); !slices.Equal(got, want) {
			t.Errorf("Keys(%T) = %v, want %v", v, got, want)
		}
	}
}
