package process

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// The fake proc tree under testdata/proc booted at btime 1700000000.
var fixtureBoot = time.Unix(1700000000, 0)

func fixtureRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("testdata", "proc"))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func fixtureUsers(uid int) string {
	return map[int]string{0: "root", 1001: "pos"}[uid]
}

func fixtureFS(t *testing.T) procFS {
	return procFS{root: fixtureRoot(t), boot: fixtureBoot, user: fixtureUsers}
}

func ticks(n int) time.Time { return fixtureBoot.Add(time.Duration(n) * 10 * time.Millisecond) }

func TestProcFSRead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pid     int
		want    proctree.Proc
		wantErr error
	}{
		{
			name: "init",
			pid:  1,
			want: proctree.Proc{
				PID: 1, Start: ticks(100), Name: "systemd", Executable: "/usr/lib/systemd/systemd",
				CommandLine: "/sbin/init splash", Args: []string{"/sbin/init", "splash"}, Cwd: "/", UID: 0, User: "root",
			},
		},
		{
			name: "kernel thread: no exe, cwd or cmdline",
			pid:  2,
			want: proctree.Proc{PID: 2, Start: ticks(100), Name: "kthreadd", UID: 0, User: "root"},
		},
		{
			name: "comm cut at 15 bytes takes the executable's name",
			pid:  500,
			want: proctree.Proc{
				PID: 500, PPID: 1, Start: ticks(5000), Name: "AgentMonitorService", Executable: "/opt/rmm/AgentMonitorService",
				CommandLine: "/opt/rmm/AgentMonitorService --daemon", Args: []string{"/opt/rmm/AgentMonitorService", "--daemon"},
				Cwd: "/opt/rmm", UID: 0, User: "root",
			},
		},
		{
			name: "hostile comm, deleted executable, effective uid",
			pid:  4242,
			want: proctree.Proc{
				PID: 4242, PPID: 500, Start: ticks(9000), Name: "evil) (x", Executable: "/tmp/.x/payload (deleted)",
				CommandLine: "./payload -k key with space", Args: []string{"./payload", "-k", "key with space"},
				Cwd: "/tmp/.x", UID: 1001, User: "pos",
			},
		},
		{
			name: "only stat readable",
			pid:  77,
			want: proctree.Proc{PID: 77, PPID: 500, Start: ticks(8000), Name: "defunct", UID: proctree.UnknownUID},
		},
		{name: "gone", pid: 31337, wantErr: fs.ErrNotExist},
		{name: "corrupt stat", pid: 99},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := fixtureFS(t).read(tc.pid)
			if tc.wantErr != nil || tc.want.PID == 0 {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("read(%d) err = %v, want %v", tc.pid, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("read(%d): %v", tc.pid, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("read(%d) =\n %+v\nwant\n %+v", tc.pid, got, tc.want)
			}
		})
	}
}

func TestProcFSReadState(t *testing.T) {
	t.Parallel()
	fs := fixtureFS(t)
	tests := []struct {
		pid            int
		wantIncomplete bool
	}{
		{pid: 77, wantIncomplete: true},    // zombie
		{pid: 4242, wantIncomplete: false}, // alive, deleted executable
		{pid: 2, wantIncomplete: false},    // kernel thread: no exe is normal
	}
	for _, tc := range tests {
		if _, inc, err := fs.readState(tc.pid); err != nil || inc != tc.wantIncomplete {
			t.Errorf("readState(%d) incomplete = %v, %v; want %v", tc.pid, inc, err, tc.wantIncomplete)
		}
	}
}

func TestProcFSReadAll(t *testing.T) {
	t.Parallel()
	got, err := fixtureFS(t).readAll()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range got {
		pids = append(pids, p.PID)
	}
	// Oldest first; 99 (corrupt) and non-numeric entries skipped.
	if want := []int{1, 2, 500, 77, 4242}; !slices.Equal(pids, want) {
		t.Fatalf("readAll pids = %v, want %v", pids, want)
	}
	if _, err := (procFS{root: filepath.Join(t.TempDir(), "nope")}).readAll(); err == nil {
		t.Fatal("readAll of a missing root succeeded")
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tail := " S 42 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n"
	tests := []struct {
		name    string
		in      string
		want    statFields
		wantErr bool
	}{
		{name: "plain", in: "10 (bash)" + tail, want: statFields{comm: "bash", state: 'S', flags: 0, ppid: 42, startTicks: 777}},
		{name: "spaces and parens in comm", in: "10 (a) b (c))" + tail, want: statFields{comm: "a) b (c)", state: 'S', flags: 0, ppid: 42, startTicks: 777}},
		{name: "empty comm", in: "10 ()" + tail, want: statFields{comm: "", state: 'S', flags: 0, ppid: 42, startTicks: 777}},
		{name: "no parens", in: "10 bash S 1", wantErr: true},
		{name: "truncated", in: "10 (bash) S 42 1", wantErr: true},
		{name: "bad ppid", in: "10 (bash) S x 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0", wantErr: true},
		{name: "bad flags", in: "10 (bash) S 4 1 1 0 -1 x 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0", wantErr: true},
		{name: "bad starttime", in: "10 (bash) S 4 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -7 0 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStatusUID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "effective uid", in: "Name:\tx\nUid:\t1000\t0\t0\t0\n", want: 0},
		{name: "non-root", in: "Uid:\t1000\t1000\t1000\t1000\n", want: 1000},
		{name: "missing", in: "Name:\tx\n", wantErr: true},
		{name: "short", in: "Uid:\t5\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStatusUID([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, wantErr %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestProcName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, comm, exe string
		args            []string
		want            string
	}{
		{name: "short comm wins", comm: "sleep", exe: "/bin/busybox", want: "sleep"},
		{name: "cut comm from exe", comm: "AgentMonitorSer", exe: "/opt/AgentMonitorService", want: "AgentMonitorService"},
		{name: "cut comm from deleted exe", comm: "AgentMonitorSer", exe: "/opt/AgentMonitorService (deleted)", want: "AgentMonitorService"},
		{name: "cut comm from argv0", comm: "python-launcher", exe: "/usr/bin/python3", args: []string{"/x/python-launcher-v2"}, want: "python-launcher-v2"},
		{name: "15-byte comm that matches nothing", comm: "exactlyfifteen!", exe: "/bin/other", want: "exactlyfifteen!"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := procName(tc.comm, tc.exe, tc.args); got != tc.want {
				t.Fatalf("procName = %q, want %q", got, tc.want)
			}
		})
	}
}
