package agent

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// The burst tripwire stops whatever makes 32 changes within a second in a
// watched folder, and the judgement kills at half the file guard's stop
// threshold. The tests below run honest bulk work that replaces files the
// way ransomware does (a new file, renamed over the original) in a folder
// watched with the kernel guard armed (guardRig): package installs, editor
// saves, rsync. Each workload must cross the burst threshold (else it
// proves nothing), be judged honest, and finish with exit status 0.

// crossed runs a workload and fails the test unless it exited 0 and at
// least one of its processes was stopped by the burst tripwire and judged
// honest on the way.
func (r *guardRig) crossed(t *testing.T, name string, argv ...string) {
	t.Helper()
	before := r.w.Verdicts(kernel.ReasonBurst, "resume")
	r.run(t, name, argv...)
	// The verdict is counted before the process is resumed, so a
	// finished workload's stops are all counted.
	if n := r.w.Verdicts(kernel.ReasonBurst, "resume") - before; n < 1 {
		t.Errorf("%s: no burst stop judged honest; it did not cross the burst threshold and proves nothing", name)
	} else {
		t.Logf("%s: %v burst stops judged honest and resumed", name, n)
	}
}

// textTree writes n small text files under dir (outside the watched
// folder: the test process writing in it would be stopped itself), each
// line carrying the tokens a1..a9 that the edits below replace one by one.
func textTree(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		var b strings.Builder
		for l := range 20 {
			fmt.Fprintf(&b, "till %d receipt %d total %d.%02d a1 a2 a3 a4 a5 a6 a7 a8 a9\n", i%7, l, i*l, l)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("note%03d.txt", i)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// edited fails the test unless every file in dir has token replaced.
func edited(t *testing.T, name, dir, token string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	if len(files) == 0 {
		t.Fatalf("%s: no files left in %s", name, dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Contains(b, []byte(" "+token+" ")) {
			t.Errorf("%s: %s still has %s: the edit did not land", name, f, token)
			return
		}
	}
}

// TestEditorSavesUnderKernelGuard saves 200 files in a row the ways
// editors and in-place tools do: vim's (a backup by rename, the file
// written new, the backup and swap file removed; simulated with sh, mv and
// sed, and real vim in ex mode when installed, one process per file and
// one for all), GIO's and LibreOffice's (a hidden temporary file or a lock
// file and a temporary, renamed over the original), sed -i and perl -pi
// (a temporary renamed over each file; perl also with backups).
func TestEditorSavesUnderKernelGuard(t *testing.T) {
	r := newGuardRig(t, "sed", "perl", "cp", "mv", "mktemp")
	textTree(t, filepath.Join(r.src, "notes"), 200)
	d := filepath.Join(r.watch, "notes")
	r.crossed(t, "cp -r of 200 notes", "cp", "-r", filepath.Join(r.src, "notes"), d)
	// slow: one process per file, fast enough to cross the burst threshold
	// on a quiet machine (about 7 vims a second) but not always on a
	// loaded one; run and checked, but not required to cross.
	type save struct {
		name, token, script string
		slow                bool
	}
	saves := []save{
		{"vim's save, simulated", "a1", `for f in "$0"/*.txt; do
			s="$0/.${f##*/}.swp"; echo swap > "$s"; : > "$0/4913"; rm "$0/4913"
			mv "$f" "$f~" && sed 's/ a1 / b1 /g' "$f~" > "$f" && rm "$f~" "$s" || exit 1
		done`, false},
		{"GIO save (gedit): .goutputstream temporary renamed over", "a2", `for f in "$0"/*.txt; do
			tmp=$(mktemp "$0/.goutputstream-XXXXXX") && sed 's/ a2 / b2 /g' "$f" > "$tmp" && chmod 644 "$tmp" && mv "$tmp" "$f" || exit 1
		done`, false},
		{"LibreOffice save: lock file, temporary renamed over", "a3", `i=0; for f in "$0"/*.txt; do
			i=$((i+1)); l="$0/.~lock.${f##*/}#"; echo "till,host,$$" > "$l"
			sed 's/ a3 / b3 /g' "$f" > "$0/lu$$-$i.tmp" && mv "$0/lu$$-$i.tmp" "$f" && rm "$l" || exit 1
		done`, false},
		{"sed -i over 200 files", "a4", `sed -i 's/ a4 / b4 /g' "$0"/*.txt`, false},
		{"perl -pi -e over 200 files", "a5", `perl -pi -e 's/ a5 / b5 /g' "$0"/*.txt`, false},
		{"perl -pi.bak -e over 200 files (with backups)", "a6", `perl -pi.bak -e 's/ a6 / b6 /g' "$0"/*.txt && rm "$0"/*.txt.bak`, false},
	}
	if _, err := exec.LookPath("vim"); err == nil {
		saves = append(saves,
			save{"vim -Es, one process per file", "a7", `for f in "$0"/*.txt; do
				vim -Es -u NONE -i NONE -c '%s/ a7 / b7 /ge' -c 'wq' "$f" || exit 1
			done`, true},
			// From outside the folder: vim names the files by the
			// absolute paths it was given.
			save{"vim -Es, argdo over 200 files", "a8", `cd "$1" && vim -Es -u NONE -i NONE -c 'argdo %s/ a8 / b8 /ge | update' -c 'qa!' "$0"/*.txt`, false})
	} else {
		t.Log("vim not installed: its saves are simulated only")
	}
	for _, s := range saves {
		if s.slow {
			r.run(t, s.name, "/bin/sh", "-c", s.script, d, r.src)
		} else {
			r.crossed(t, s.name, "/bin/sh", "-c", s.script, d, r.src)
		}
		edited(t, s.name, d, s.token)
	}
	if _, err := exec.LookPath("vim"); err == nil {
		// From the watched folder, vim shortens the names to relative
		// ones (notes/note000.txt): the kernel places them by the
		// folder they start in, counts them and stops vim once.
		r.crossed(t, "vim -Es, argdo from the watched folder", "/bin/sh", "-c",
			`vim -Es -u NONE -i NONE -c 'argdo %s/ a9 / b9 /ge | update' -c 'qa!' notes/*.txt`)
		edited(t, "vim -Es, argdo from the watched folder", d, "a9")
	}
	if left, _ := filepath.Glob(filepath.Join(d, ".*")); len(left) > 0 {
		t.Errorf("editor leftovers: %v", left)
	}
	r.honest(t)
}

// debTree writes a package tree for tillpos-data at version under dir:
// control, a conffile, and n files under opt/tillpos the way a package
// ships them (scripts, compressed documentation, locale data, copies of a
// real executable). Files whose index is a multiple of skip are left out,
// so an upgrade both replaces and removes.
func debTree(t *testing.T, dir, version string, n, skip int) {
	t.Helper()
	write := func(rel string, b []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("DEBIAN/control", []byte("Package: tillpos-data\nVersion: "+version+"\nArchitecture: all\n"+
		"Maintainer: tillwatch tests <tests@example.invalid>\nDescription: till data for the kernel guard test\n"), 0o644)
	write("DEBIAN/conffiles", []byte("/etc/tillpos/till.conf\n"), 0o644)
	write("etc/tillpos/till.conf", []byte("# till configuration "+version+"\nstore=0042\n"), 0o644)
	elf, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if skip > 0 && i%skip == 0 {
			continue
		}
		text := []byte(strings.Repeat(fmt.Sprintf("tillpos %s item %d price %d.%02d\n", version, i, i*3, i%100), 30))
		switch i % 4 {
		case 0:
			write(fmt.Sprintf("opt/tillpos/bin/tool%03d", i), append([]byte("#!/bin/sh\n# "+version+"\n"), text...), 0o755)
		case 1:
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			zw.Write(text)
			zw.Close()
			write(fmt.Sprintf("opt/tillpos/share/doc/page%03d.txt.gz", i), gz.Bytes(), 0o644)
		case 2:
			write(fmt.Sprintf("opt/tillpos/share/locale/l%03d/messages.po", i), text, 0o644)
		default:
			write(fmt.Sprintf("opt/tillpos/lib/helper%03d", i), append(append([]byte{}, elf...), version...), 0o755)
		}
	}
}

// TestPackageInstallUnderKernelGuard builds real packages with dpkg-deb
// and, in a watched folder, extracts one (dpkg -x), installs it into an
// instdir there with its own admindir (both by absolute paths, which the
// kernel counts), upgrades it to a second version
// (dpkg unpacks each file as FILE.dpkg-new and renames it over the old
// one, and removes the files the new version dropped), then removes and
// purges it. dpkg must exit 0 every time and nothing may be killed.
func TestPackageInstallUnderKernelGuard(t *testing.T) {
	r := newGuardRig(t, "dpkg", "dpkg-deb")
	const n = 320
	debs := map[string]string{}
	for _, v := range []struct {
		version string
		skip    int
	}{{"1.0", 0}, {"1.1", 10}} {
		tree := filepath.Join(r.src, "pkg-"+v.version)
		debTree(t, tree, v.version, n, v.skip)
		deb := filepath.Join(r.src, "tillpos-data_"+v.version+"_all.deb")
		if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", tree, deb).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb --build: %v %s", err, out)
		}
		debs[v.version] = deb
	}
	inst, admin := filepath.Join(r.watch, "pos"), filepath.Join(r.watch, "pos-dpkg")
	r.run(t, "admindir", "/bin/sh", "-c", `mkdir -p "$0" "$1/updates" "$1/info" && : > "$1/status"`, inst, admin)
	// --log: dpkg would append to the host's /var/log/dpkg.log.
	dpkg := func(args ...string) []string {
		return append([]string{"dpkg", "--instdir=" + inst, "--admindir=" + admin, "--log=/dev/null"}, args...)
	}
	// dpkg -x hands the archive to tar in the target folder: relative
	// paths, counted by the folder they start in.
	r.crossed(t, "dpkg -x", "dpkg", "-x", debs["1.0"], filepath.Join(r.watch, "extracted"))
	if _, err := os.Stat(filepath.Join(r.watch, "extracted/opt/tillpos/lib/helper003")); err != nil {
		t.Errorf("dpkg -x: %v", err)
	}
	r.crossed(t, "dpkg -i 1.0", dpkg("-i", debs["1.0"])...)
	installed := filepath.Join(inst, "opt/tillpos/lib/helper003")
	if b, err := os.ReadFile(installed); err != nil || !bytes.HasSuffix(b, []byte("1.0")) {
		t.Fatalf("dpkg -i 1.0: %s not installed: %v", installed, err)
	}
	r.crossed(t, "dpkg -i 1.1 (upgrade)", dpkg("-i", debs["1.1"])...)
	if b, err := os.ReadFile(installed); err != nil || !bytes.HasSuffix(b, []byte("1.1")) {
		t.Errorf("upgrade to 1.1: %s not replaced: %v", installed, err)
	}
	if _, err := os.Stat(filepath.Join(inst, "opt/tillpos/bin/tool000")); !os.IsNotExist(err) {
		t.Errorf("upgrade to 1.1: a file 1.1 dropped is still there (%v)", err)
	}
	var left []string
	filepath.WalkDir(inst, func(p string, _ os.DirEntry, _ error) error {
		if strings.Contains(p, ".dpkg-") {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("dpkg left %d temporary files, first %s", len(left), left[0])
	}
	r.crossed(t, "dpkg -r", dpkg("-r", "tillpos-data")...)
	r.run(t, "dpkg -P", dpkg("-P", "tillpos-data")...)
	if _, err := os.Stat(filepath.Join(inst, "opt/tillpos/lib/helper003")); !os.IsNotExist(err) {
		t.Errorf("dpkg -r left the package's files (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(inst, "etc/tillpos/till.conf")); !os.IsNotExist(err) {
		t.Errorf("dpkg -P left the conffile (%v)", err)
	}
	r.honest(t)
}

// TestRsyncUnderKernelGuard copies a tree of 300 files into the watched
// folder with rsync, then syncs a changed source over it: rsync writes
// each file as a hidden temporary and renames it over the old one (its
// default, no --inplace), and --delete removes what the source dropped.
// Its receiver names files relative to a directory it opened, which the
// kernel places by that directory's identity: it crosses the burst
// threshold and must be judged honest. Part of the tree has an
// extension the scorer does not know (.po), so that the renames of the
// temporaries (.messages.po.Xy12ab -> messages.po) are judged too.
func TestRsyncUnderKernelGuard(t *testing.T) {
	r := newGuardRig(t, "rsync", "diff")
	src := filepath.Join(r.src, "tree")
	for d := range 3 {
		textTree(t, filepath.Join(src, fmt.Sprintf("dept%d", d)), 100)
	}
	for i := range 40 {
		dir := filepath.Join(src, "locale", fmt.Sprintf("l%02d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "messages.po"), []byte(strings.Repeat("msgid \"total\"\nmsgstr \"Summe\"\n", 40)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(r.watch, "tree")
	r.crossed(t, "rsync -a into the folder", "rsync", "-a", src+"/", dst+"/")
	// Change every source file (new size, so the quick check sees it) and
	// drop a few.
	var files []string
	filepath.WalkDir(src, func(p string, de os.DirEntry, _ error) error {
		if de != nil && !de.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	for i, f := range files {
		if i%25 == 0 {
			os.Remove(f)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, append(b, "closed\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.crossed(t, "rsync -a --delete over the tree", "rsync", "-a", "--delete", src+"/", dst+"/")
	if out, err := exec.Command("diff", "-r", src, dst).CombinedOutput(); err != nil {
		t.Errorf("after rsync the trees differ: %v %s", err, out)
	}
	r.honest(t)
}
