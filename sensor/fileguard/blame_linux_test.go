package fileguard

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

const nobody = 65534

// worldDir is a directory every user can traverse (t.TempDir is 0700).
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fileguard-blame-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// installed copies /bin/sleep to dir/name owned by uid, mode 0755: an
// installed program (uid 0) or one a user dropped.
func installed(t *testing.T, dir, name string, uid int) string {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
	return p
}

// preloadLib builds testdata/preload.c into a shared object owned by uid.
func preloadLib(t *testing.T, dir string, uid int) string {
	t.Helper()
	cc := ""
	for _, c := range []string{"cc", "gcc", "clang", "clang-14"} {
		if p, err := exec.LookPath(c); err == nil {
			cc = p
			break
		}
	}
	if cc == "" {
		t.Skip("no C compiler to build the injected library")
	}
	so := filepath.Join(dir, "libevil.so")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", so, "testdata/preload.c").CombinedOutput(); err != nil {
		t.Fatalf("build the injected library: %v\n%s", err, out)
	}
	if err := os.Chown(so, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(so, 0o755); err != nil {
		t.Fatal(err)
	}
	return so
}

// TestExeToBlame: real processes, each stopped as the guard stops them.
func TestExeToBlame(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run processes as another user")
	}
	t.Parallel()
	base := worldDir(t)
	rootProg := installed(t, base, "posd", 0)
	userProg := installed(t, base, "dropped", nobody)
	so := preloadLib(t, base, nobody)
	for _, tc := range []struct {
		name  string
		exe   string
		uid   int
		env   []string
		blame bool
		why   string
	}{
		{"root runs a program root dropped", rootProg, 0, nil, true, ""},
		{"a user runs a program they dropped", userProg, nobody, nil, true, ""},
		{"a user runs an installed program", rootProg, nobody, nil, false, "cannot have written it"},
		{"root runs an installed program under LD_PRELOAD", rootProg, 0, []string{"LD_PRELOAD=" + so}, false, "LD_PRELOAD"},
		{"LD_LIBRARY_PATH", rootProg, 0, []string{"LD_LIBRARY_PATH=" + base}, false, "LD_LIBRARY_PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.exe, "30")
			cmd.Env = tc.env
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(tc.uid), Gid: uint32(tc.uid)}}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			// Wait until the loader has mapped what it maps (the exe
			// link names the program once exec is done).
			for deadline := time.Now().Add(10 * time.Second); exeOf("/proc", cmd.Process.Pid) != tc.exe; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the process never ran its program")
				}
			}
			ok, why := exeToBlame("/proc", cmd.Process.Pid, tc.exe)
			if ok != tc.blame || !strings.Contains(why, tc.why) {
				t.Errorf("exeToBlame = %v %q, want %v containing %q", ok, why, tc.blame, tc.why)
			}
			// The mapping check finds the preloaded library on its own.
			if strings.HasPrefix(strings.Join(tc.env, ""), "LD_PRELOAD=") {
				// The loader maps it after exec: poll, bounded.
				var lib string
				var err error
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if lib, err = foreignCode(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid)), tc.exe); err != nil || lib == so {
						break
					}
				}
				if err != nil || lib != so {
					t.Errorf("foreignCode = %q %v, want %s", lib, err, so)
				}
			}
		})
	}
}

// A local user runs an installed, root-owned program with a library of
// theirs preloaded that encrypts the watched folder. The guard must stop
// the process, but must not take the installed program off the till.
func TestInstalledProgramUnderLDPreloadIsNotQuarantined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify permission events need root")
	}
	t.Parallel()
	base := worldDir(t)
	opt := filepath.Join(base, "opt")
	if err := os.Mkdir(opt, 0o755); err != nil {
		t.Fatal(err)
	}
	posd := installed(t, opt, "posd", 0)
	so := preloadLib(t, base, nobody)
	dir := filepath.Join(base, "shop")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := corpus(t, dir, 40)
	for p := range files {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	exec1, quarantine := quarantiner(t, t.TempDir(), opt)
	out := run(t, dir, nil, func(o *Options) { o.Quarantine = quarantine })

	cmd := exec.Command(posd, "30")
	cmd.Env = []string{"LD_PRELOAD=" + so, "TW_ENCRYPT_DIR=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	killedBySIGKILL(t, "the preloaded program", cmd.Run())
	if n := lost(files); n > 1 {
		t.Errorf("%d files lost, want at most 1", n)
	}
	v := waitVerdict(t, out, func(event.Event) bool { return true })
	r := v.Tillwatch.Ransomware
	if len(r.Quarantined) != 0 {
		t.Errorf("the installed program was quarantined: %v", r.Quarantined)
	}
	if _, err := os.Stat(posd); err != nil {
		t.Fatalf("the installed program is gone from %s: %v", posd, err)
	}
	if q, _ := exec1.ListQuarantine(); len(q) != 0 {
		t.Errorf("quarantine holds %+v", q)
	}
	if !strings.Contains(strings.Join(r.Reasons, "; "), "not quarantined") {
		t.Errorf("the verdict does not say why nothing was quarantined: %q", r.Reasons)
	}
}
