package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRelativeWriteOpen measures what placing a relative path costs
// the host's other processes: an openat(dirfd, "f", O_WRONLY|O_CREAT) and
// close in a folder 6 levels deep that is no guarded root, without the
// layer, and with the burst tripwire armed on a root beside it (the walk
// up to the filesystem's root, each level looked up), and from the folder
// above the root (the walk and the comparison of the name with the root's);
// and an absolute path outside the roots, without and with the layer.
func BenchmarkRelativeWriteOpen(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the kernel layer needs root")
	}
	base := b.TempDir()
	dir := filepath.Join(base, "a", "b", "c", "d", "e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	abs := func(b *testing.B, p string) {
		for range b.N {
			f, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(f)
		}
	}
	run := func(b *testing.B, in, name string) {
		fd, err := unix.Open(in, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		b.ResetTimer()
		for range b.N {
			f, err := unix.Openat(fd, name, unix.O_WRONLY|unix.O_CREAT, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(f)
		}
	}
	b.Run("no layer", func(b *testing.B) { run(b, dir, "f") })
	b.Run("no layer, absolute", func(b *testing.B) { abs(b, filepath.Join(dir, "g")) })
	cfg := Config{PinDir: filepath.Join("/sys/fs/bpf", fmt.Sprintf("tillwatch-test-bench-%d", time.Now().UnixNano())), Enforce: true,
		Burst: true, BurstThreshold: 1 << 30, BurstWindow: time.Second, GuardRoots: []string{root}}
	b.Cleanup(func() { Release(cfg.PinDir) })
	l, err := Load(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Unpin() })
	b.Run("armed, outside the roots", func(b *testing.B) { run(b, dir, "f") })
	b.Run("armed, from above a root", func(b *testing.B) { run(b, base, "rootx") })
	// An absolute path outside the roots: read whole and made lexical
	// (lexical_path) before the prefix compare.
	b.Run("armed, absolute outside", func(b *testing.B) { abs(b, filepath.Join(dir, "g")) })
}
