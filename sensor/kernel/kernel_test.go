package kernel

import (
	"os"
	"strings"
	"testing"
)

func TestConfigValidateRings(t *testing.T) {
	t.Parallel()
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"set", Config{ProcRing: 4 << 20, TamperRing: 64 << 10}, true},
		{"not a power of two", Config{ProcRing: 3 << 20}, false},
		{"below the wake-up batch", Config{ProcRing: 256 << 10}, false},
		{"tamper below the minimum", Config{TamperRing: page}, false},
		{"too large", Config{ProcRing: 1 << 30}, false},
		{"negative", Config{TamperRing: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
			}
		})
	}
}

func TestMountDev(t *testing.T) {
	t.Parallel()
	const table = `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
61 28 0:52 /@home /home rw,relatime shared:30 - btrfs /dev/vdb rw,subvol=/@home
bad line
70 28 x:1 / /broken rw - ext4 /dev/x rw
`
	for _, tc := range []struct {
		name         string
		id           uint64
		major, minor uint32
		ok           bool
	}{
		{"root", 28, 254, 0, true},
		{"btrfs subvolume: the superblock's device", 61, 0, 52, true},
		{"missing", 99, 0, 0, false},
		{"malformed device", 70, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ma, mi, ok := mountDev(strings.NewReader(table), tc.id)
			if ma != tc.major || mi != tc.minor || ok != tc.ok {
				t.Errorf("mountDev(%d) = %d:%d %v, want %d:%d %v", tc.id, ma, mi, ok, tc.major, tc.minor, tc.ok)
			}
		})
	}
	if got := kernelDev(254, 3); got != 254<<20|3 {
		t.Errorf("kernelDev(254, 3) = %#x", got)
	}
}
