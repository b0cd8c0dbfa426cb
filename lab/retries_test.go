package main

import (
	"slices"
	"testing"
)

// A second whose reading of the retries counter failed takes the next
// reading, so that no second shows every retry since the start, and the
// per-second counts still add up to the total.
func TestFillReadings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		counts []float64
		read   []bool
		want   []float64
	}{
		{"all read", []float64{0, 2, 5, 9}, []bool{true, true, true, true}, []float64{0, 2, 5, 9}},
		{"one failed", []float64{0, 2, 0, 9}, []bool{true, true, false, true}, []float64{0, 2, 9, 9}},
		{"two in a row", []float64{0, 0, 0, 9}, []bool{true, false, false, true}, []float64{0, 9, 9, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slices.Clone(tc.counts)
			fillReadings(got, tc.read)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			sum := 0.0
			for i := range len(got) - 1 {
				if d := got[i+1] - got[i]; d < 0 {
					t.Errorf("second %d: %v retries", i, d)
				} else {
					sum += d
				}
			}
			if sum != got[len(got)-1] {
				t.Errorf("the seconds add up to %v, want the total %v", sum, got[len(got)-1])
			}
		})
	}
}
