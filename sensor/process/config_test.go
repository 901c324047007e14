package process

import (
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{name: "zero value is valid", cfg: Config{}},
		{name: "defaults are valid", cfg: Default()},
		{name: "poll", cfg: Config{Backend: BackendPoll, PollInterval: 100 * time.Millisecond, ProcRoot: "/host/proc"}},
		{name: "unknown backend", cfg: Config{Backend: "ebpf"}, want: []string{`process.backend "ebpf"`}},
		{name: "interval too short", cfg: Config{PollInterval: time.Millisecond}, want: []string{"process.poll_interval 1ms"}},
		{name: "interval negative", cfg: Config{PollInterval: -time.Second}, want: []string{"process.poll_interval -1s"}},
		{name: "relative root", cfg: Config{ProcRoot: "proc"}, want: []string{`process.proc_root "proc"`}},
		{
			name: "every problem at once",
			cfg:  Config{Backend: "x", PollInterval: time.Hour, ProcRoot: "p"},
			want: []string{"process.backend", "process.poll_interval", "process.proc_root"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	cfg := Default()
	if err := cfgfile.Decode("t.yaml", []byte("backend: poll\npoll_interval: 250ms\nproc_root: /host/proc\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	want := Config{Backend: BackendPoll, PollInterval: 250 * time.Millisecond, ProcRoot: "/host/proc"}
	if cfg != want {
		t.Fatalf("decoded %+v, want %+v", cfg, want)
	}
	if err := cfgfile.Decode("t.yaml", []byte("backnd: poll\n"), &cfg); err == nil {
		t.Fatal("a misspelt key decoded without error")
	}
}
