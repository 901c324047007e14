package benchdoc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	steps := []struct{ heading, section, want string }{
		{"## A", "## A\na1\n", "# Benchmarks\n\n## A\na1\n"},
		{"## B", "## B\nb1", "# Benchmarks\n\n## A\na1\n\n## B\nb1\n"},
		{"## A", "## A\na2\n", "# Benchmarks\n\n## A\na2\n\n## B\nb1\n"},
		{"## B", "## B\nb2\n", "# Benchmarks\n\n## A\na2\n\n## B\nb2\n"},
	}
	for i, s := range steps {
		if err := WriteSection(path, s.heading, s.section); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != s.want {
			t.Fatalf("step %d:\n%q\nwant\n%q", i, got, s.want)
		}
	}
}
