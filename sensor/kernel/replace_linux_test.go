package kernel

import (
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestReplaceMap replaces a real hash map's content: entries the new
// content lacks go, the others are written, and a map too small for the
// new content says which content failed while the rest is still written.
func TestReplaceMap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a BPF map needs root")
	}
	for _, tc := range []struct {
		name      string
		max       uint32
		old, want map[uint32]uint32
		err       bool
	}{
		{name: "replaced", max: 8, old: map[uint32]uint32{1: 1, 2: 2, 3: 3}, want: map[uint32]uint32{2: 20, 4: 40}},
		{name: "emptied", max: 8, old: map[uint32]uint32{1: 1, 2: 2}, want: map[uint32]uint32{}},
		{name: "filled", max: 8, old: map[uint32]uint32{}, want: map[uint32]uint32{5: 5, 6: 6}},
		{name: "unchanged", max: 8, old: map[uint32]uint32{7: 7}, want: map[uint32]uint32{7: 7}},
		{name: "too many", max: 2, old: map[uint32]uint32{1: 1, 2: 2}, want: map[uint32]uint32{2: 2, 3: 3, 4: 4}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for k, v := range tc.old {
				if err := m.Put(k, v); err != nil {
					t.Fatal(err)
				}
			}
			err = replaceMap(m, tc.want, "test entries")
			got := map[uint32]uint32{}
			var k, v uint32
			it := m.Iterate()
			for it.Next(&k, &v) {
				got[k] = v
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), "writing one of test entries") {
					t.Fatalf("replaceMap into a full map: err %v, want one naming the content", err)
				}
				// The stale key went, and the map holds only wanted entries, as many as fit.
				if len(got) != int(tc.max) {
					t.Fatalf("map holds %v, want %d of %v", got, tc.max, tc.want)
				}
				for k, v := range got {
					if w, ok := tc.want[k]; !ok || w != v {
						t.Fatalf("map holds %d=%d, not in %v", k, v, tc.want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("map holds %v, want %v", got, tc.want)
			}
		})
	}
}
