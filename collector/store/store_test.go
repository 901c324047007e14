package store

import (
	"reflect"
	"testing"
)

func TestGaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		high     int64
		seqs     []int64
		wantGaps []SequenceGap
		wantHigh int64
		wantLost int64
	}{
		{"first batch sets the baseline", 0, []int64{1, 2, 3}, nil, 3, 0},
		{"first batch not at 1 is a baseline, not a loss", 0, []int64{57, 58}, nil, 58, 0},
		{"contiguous", 3, []int64{4, 5}, nil, 5, 0},
		{"a hole", 3, []int64{7, 8}, []SequenceGap{{4, 6}}, 8, 3},
		{"two holes in one batch", 3, []int64{5, 9}, []SequenceGap{{4, 4}, {6, 8}}, 9, 4},
		{"redelivery is not a gap", 9, []int64{5, 6, 7}, nil, 9, 0},
		{"spool reset restarts tracking", 90, []int64{1, 2}, nil, 2, 0},
		{"unsequenced events are ignored", 3, []int64{0, 0, 4}, nil, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gaps, high, lost := Gaps(tc.high, tc.seqs)
			if !reflect.DeepEqual(gaps, tc.wantGaps) || high != tc.wantHigh || lost != tc.wantLost {
				t.Errorf("Gaps(%d, %v) = %v, %d, %d; want %v, %d, %d", tc.high, tc.seqs, gaps, high, lost, tc.wantGaps, tc.wantHigh, tc.wantLost)
			}
		})
	}
}
