package migrate

import (
	"testing"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// TestEstimateTotal: keys_total is estimated from the share of slots the
// streams are through, and left alone when nothing can be told yet.
func TestEstimateTotal(t *testing.T) {
	// A job of 200 slots in two streams of 100: 0-49,100-149 and 50-99,150-199.
	ranges := slot.MustParseRangeSet("0-199")
	mk := func(at0, at1 int32, done0 bool) *job {
		j := &job{ranges: ranges, rec: &record{Phase: migratorv1.Phase_PHASE_SNAPSHOT}}
		for i, rs := range []string{"0-49,100-149", "50-99,150-199"} {
			st := &streamState{index: uint32(i), ranges: slot.MustParseRangeSet(rs)}
			st.at.Store([]int32{at0, at1}[i])
			j.streams = append(j.streams, st)
		}
		j.streams[0].done.Store(done0)
		return j
	}
	cases := []struct {
		name       string
		j          *job
		keys, want uint64
	}{
		{"nothing acknowledged", mk(-1, -1, false), 0, 0},
		{"first slots only", mk(0, 50, false), 10, 0},
		{"a quarter of the slots", mk(100, 50, false), 500, 2000}, // 50 of 200 slots done
		{"into a second range", mk(120, 75, false), 950, 2000},    // 70 + 25 = 95 of 200
		{"one stream done", mk(0, 150, true), 1500, 2000},         // 100 + 50 = 150 of 200
		{"nearly done", mk(149, 199, false), 3000, 3030},          // 99 + 99 = 198 of 200
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.j.rec.Keys = tc.keys
			tc.j.estimateTotalLocked()
			if got := tc.j.rec.KeysTotal; got != tc.want {
				t.Errorf("keys_total = %d, want %d (slots done %d, %d)", got, tc.want, tc.j.streams[0].slotsDone(), tc.j.streams[1].slotsDone())
			}
		})
	}
	// Outside SNAPSHOT the total is what it was.
	j := mk(100, 50, false)
	j.rec.Phase, j.rec.Keys, j.rec.KeysTotal = migratorv1.Phase_PHASE_CATCH_UP, 500, 777
	if j.estimateTotalLocked(); j.rec.KeysTotal != 777 {
		t.Errorf("keys_total changed outside SNAPSHOT: %d", j.rec.KeysTotal)
	}
}
