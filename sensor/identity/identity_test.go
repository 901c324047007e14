package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostIDOrder(t *testing.T) {
	t.Parallel()
	machineID := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(machineID, []byte("0123456789abcdef0123456789abcdef\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		override  string
		kept      string
		machineID string
		want      string
	}{
		{"override wins", "till-9", "kept", machineID, "till-9"},
		{"kept id next", "", "kept-id", machineID, "kept-id"},
		{"machine id next", "", "", machineID, "0123456789abcdef0123456789abcdef"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			state := t.TempDir()
			if tc.kept != "" {
				if err := Save(state, Identity{HostID: tc.kept}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := HostID(state, tc.override, tc.machineID)
			if err != nil || got != tc.want {
				t.Errorf("HostID = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("generated and kept", func(t *testing.T) {
		t.Parallel()
		state := t.TempDir()
		first, err := HostID(state, "", filepath.Join(state, "no-machine-id"))
		if err != nil || len(first) != 32 {
			t.Fatalf("generated %q, %v", first, err)
		}
		second, _ := HostID(state, "", filepath.Join(state, "no-machine-id"))
		if second != first {
			t.Errorf("generated id not kept: %q then %q", first, second)
		}
	})
}

func TestCorruptIdentitySaysWhatToDo(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, File), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(state)
	if err == nil || !strings.Contains(err.Error(), "remove it to enrol again") {
		t.Errorf("got %v", err)
	}
}

func TestReadToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		content string
		ok      bool
	}{
		"plain":      {"tw_abc", true},
		"newline":    {"tw_abc\n", true},
		"empty":      {"\n", false},
		"two tokens": {"tw_a tw_b", false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		tok, err := ReadToken(p)
		if (err == nil) != tc.ok || (tc.ok && tok != "tw_abc") {
			t.Errorf("%s: %q, %v", name, tok, err)
		}
	}
}
