package proctree

import (
	"slices"
	"testing"
)

// TestUp pins where every walk up a chain read from the OS ends.
func TestUp(t *testing.T) {
	t.Parallel()
	deep := map[int]int{}
	for pid := 1000; pid < 1100; pid++ {
		deep[pid] = pid + 1
	}
	for _, tc := range []struct {
		name    string
		start   int
		parents map[int]int // pid -> parent; a pid missing is gone
		stopAt  int         // step says "no further" after visiting this pid
		want    []int
	}{
		{"ends before pid 1", 30, map[int]int{30: 20, 20: 10, 10: 1}, 0, []int{30, 20, 10}},
		{"pid 1 itself is never visited", 1, map[int]int{1: 0}, 0, nil},
		{"pid 0 and below are no process", 0, nil, 0, nil},
		{"a gone process ends it", 30, map[int]int{30: 20}, 0, []int{30, 20}},
		{"step stops it", 30, map[int]int{30: 20, 20: 10, 10: 1}, 20, []int{30, 20}},
		{"a loop ends at the first repeat", 30, map[int]int{30: 20, 20: 10, 10: 30}, 0, []int{30, 20, 10}},
		{"a self-parent ends it", 30, map[int]int{30: 30}, 0, []int{30}},
		{"bounded by MaxDepth", 1000, deep, 0, func() []int {
			var w []int
			for pid := 1000; pid < 1000+MaxDepth; pid++ {
				w = append(w, pid)
			}
			return w
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []int
			Up(tc.start, func(pid int) (int, bool) {
				got = append(got, pid)
				parent, ok := tc.parents[pid]
				return parent, ok && pid != tc.stopAt
			})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("visited %v, want %v", got, tc.want)
			}
		})
	}
}
