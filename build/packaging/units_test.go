package packaging

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	collectorconfig "github.com/tillwatch/tillwatch/collector/config"
	collectordeploy "github.com/tillwatch/tillwatch/collector/deploy"
	sensorconfig "github.com/tillwatch/tillwatch/sensor/config"
	sensordeploy "github.com/tillwatch/tillwatch/sensor/deploy"
	"github.com/tillwatch/tillwatch/sensor/privilege"
)

// unit is a parsed systemd unit: section -> key -> values in order (a key
// may repeat; an empty assignment resets the list, as systemd does).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, fsys fs.FS, name string) unit {
	t.Helper()
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", name, n, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = []string{""}
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// get returns the values of key joined by spaces ("" when unset).
func (u unit) get(section, key string) (string, bool) {
	v, ok := u[section][key]
	return strings.TrimSpace(strings.Join(v, " ")), ok
}

func (u unit) want(t *testing.T, section, key, value string) {
	t.Helper()
	if got, ok := u.get(section, key); !ok || got != value {
		t.Errorf("[%s] %s=%q (set %v), want %q", section, key, got, ok, value)
	}
}

func TestSensorUnit(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, sensordeploy.Files, sensordeploy.Unit)
	def := sensorconfig.Default()

	u.want(t, "Service", "Type", "simple")
	u.want(t, "Service", "ExecStart", "/usr/bin/tillwatch-sensor run -c "+ConfigDir+"/"+sensordeploy.Config)
	u.want(t, "Service", "Restart", "always")             // the kernel tripwires cover the gap; see docs/kernel.md
	u.want(t, "Service", "RestartPreventExitStatus", "2") // a config error does not loop
	u.want(t, "Service", "NoNewPrivileges", "yes")
	u.want(t, "Service", "ProtectSystem", "strict")
	u.want(t, "Service", "StateDirectory", filepath.Base(def.StateDir))
	u.want(t, "Service", "StateDirectoryMode", "0700")
	u.want(t, "Service", "PrivateTmp", "no")  // it watches /tmp
	u.want(t, "Service", "ProtectHome", "no") // it scans, guards and quarantines in /home
	u.want(t, "Service", "LimitNOFILE", "65536")
	u.want(t, "Service", "User", "root")
	for _, k := range []string{"StartLimitIntervalSec", "StartLimitBurst"} {
		if _, ok := u.get("Unit", k); !ok {
			t.Errorf("[Unit] %s unset: restarts need a rate limit", k)
		}
	}
	for _, k := range []string{"WatchdogSec", "DynamicUser", "AmbientCapabilities", "ProtectKernelModules", "PrivateNetwork"} {
		if v, ok := u.get("Service", k); ok {
			t.Errorf("[Service] %s=%q: not wanted for the sensor (docs/deploy.md says why)", k, v)
		}
	}
	if v, _ := u.get("Service", "OOMScoreAdjust"); !strings.HasPrefix(v, "-") {
		t.Errorf("OOMScoreAdjust=%q: want a negative value so the kernel kills attackers first", v)
	}
	rw, _ := u.get("Service", "ReadWritePaths")
	writable := []string{"/dev", "/var/lib/" + filepath.Base(def.StateDir)} // API file system, StateDirectory
	for _, p := range strings.Fields(rw) {
		writable = append(writable, strings.TrimPrefix(p, "-"))
	}
	// disable-rmm writes masks there; quarantine-file moves files out of the
	// kill-switch's default allowed roots; decoys go into watched folders.
	for _, p := range append([]string{"/etc/systemd/system"}, def.KillSwitch.AllowedRoots...) {
		if !slices.ContainsFunc(writable, func(w string) bool { return p == w || strings.HasPrefix(p, w+"/") }) {
			t.Errorf("%s is read-only under ProtectSystem=strict: add it to ReadWritePaths (writable: %v)", p, writable)
		}
	}

	caps, _ := u.get("Service", "CapabilityBoundingSet")
	set := strings.Fields(caps)
	want := []string{"CAP_BPF", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_KILL", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}
	slices.Sort(set)
	if !slices.Equal(set, want) {
		t.Errorf("CapabilityBoundingSet %v, want exactly %v", set, want)
	}
	// Every capability the sensor checks for at start must be in the set.
	for _, name := range privilege.Names {
		if !slices.Contains(set, name) {
			t.Errorf("the sensor checks for %s but the unit's bounding set lacks it", name)
		}
	}
	if strings.Contains(caps, "CAP_AUDIT") || strings.HasPrefix(caps, "~") {
		t.Errorf("CapabilityBoundingSet=%q: an allow-list without CAP_AUDIT_*", caps)
	}
	u.want(t, "Install", "WantedBy", "multi-user.target")
}

func TestCollectorUnit(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, collectordeploy.Files, collectordeploy.Unit)
	cfg, err := collectorconfig.Load(filepath.Join("..", "..", "collector", "deploy", collectordeploy.Config))
	if err != nil {
		t.Fatal(err)
	}

	u.want(t, "Service", "ExecStart", "/usr/bin/tillwatch-collector run -c "+ConfigDir+"/"+collectordeploy.Config)
	u.want(t, "Service", "User", "tillwatch")
	u.want(t, "Service", "Group", "tillwatch")
	u.want(t, "Service", "DynamicUser", "no")
	u.want(t, "Service", "StateDirectory", filepath.Base(cfg.DataDir))
	u.want(t, "Service", "StateDirectoryMode", "0700")
	u.want(t, "Service", "CapabilityBoundingSet", "")
	u.want(t, "Service", "AmbientCapabilities", "")
	u.want(t, "Service", "NoNewPrivileges", "yes")
	u.want(t, "Service", "ProtectSystem", "strict")
	u.want(t, "Service", "ProtectHome", "yes")
	u.want(t, "Service", "PrivateTmp", "yes")
	u.want(t, "Service", "PrivateDevices", "yes")
	u.want(t, "Service", "Restart", "on-failure")
	u.want(t, "Service", "SystemCallArchitectures", "native")
	if v := u["Service"]["SystemCallFilter"]; len(v) == 0 || v[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q, want @system-service first", v)
	}
	for _, k := range []string{"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
		"ProtectClock", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute"} {
		u.want(t, "Service", k, "yes")
	}
	if cfg.DataDir != "/var/lib/"+filepath.Base(cfg.DataDir) {
		t.Errorf("collector.yaml data_dir %q is not the unit's StateDirectory under /var/lib", cfg.DataDir)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on both units. It
// rejects nothing silently: an unknown key or a bad value is only a
// warning there, so any output about the unit fails the test. ExecStart
// must name an executable, so the unit is checked with its binary path
// pointing at a real one.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fsys       fs.FS
		name, bin  string
		binaryPath string
	}{
		{sensordeploy.Files, sensordeploy.Unit, "/usr/bin/tillwatch-sensor", exe},
		{collectordeploy.Files, collectordeploy.Unit, "/usr/bin/tillwatch-collector", exe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := fs.ReadFile(tc.fsys, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte("ExecStart="+tc.bin+" ")) {
				t.Fatalf("ExecStart does not start with %s", tc.bin)
			}
			path := filepath.Join(t.TempDir(), tc.name)
			b = bytes.ReplaceAll(b, []byte("ExecStart="+tc.bin+" "), []byte("ExecStart="+tc.binaryPath+" "))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
			var ours []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, tc.name) || strings.Contains(l, path) {
					ours = append(ours, l)
				}
			}
			if err != nil || len(ours) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", tc.name, err, out)
			}
		})
	}
}
