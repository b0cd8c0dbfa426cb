package store_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/store"
)

// Each ejection of an entry lasts Base × the times it has been ejected, up
// to Max; one that comes while it is ejected changes nothing; after Max
// without one, the count starts again.
func TestEjectionBackoff(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	p := store.EjectPolicy{Base: 100 * time.Millisecond, Max: 350 * time.Millisecond, MaxPercent: 50}
	var got []time.Duration
	for i := range 5 {
		e, err := s.Eject(ctx, three[0], p)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Ejected || e.Times != i+1 {
			t.Fatalf("ejection %d: got %+v, want ejected, times %d", i+1, e, i+1)
		}
		got = append(got, e.For)
		if again, _ := s.Eject(ctx, three[0], p); !again.Already || !again.Until.Equal(e.Until) {
			t.Errorf("ejection %d again while ejected: got %+v, want already, until %v", i+1, again, e.Until)
		}
		// It ends (here at once, by hand, as if its time had come).
		srv.Client.ZRem(ctx, "{servers}:ejected", three[0])
	}
	if want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 350 * time.Millisecond, 350 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("ejection lengths: got %v, want %v", got, want)
	}
	// Longer than Max since the last one ended: the count starts again.
	time.Sleep(p.Max + 400*time.Millisecond)
	if e, _ := s.Eject(ctx, three[0], p); e.Times != 1 || e.For != p.Base {
		t.Errorf("ejection after a quiet spell: got %+v, want times 1 for %v", e, p.Base)
	}
	// Ejections() shows it, with its count; ReadExtras() the pool's view.
	now, ej, err := s.Ejections(ctx)
	if err != nil || ej[three[0]].Times != 1 || !ej[three[0]].Until.After(now) {
		t.Errorf("Ejections: got %+v at %v (err %v), want %s ejected once, until later", ej, now, err, three[0])
	}
	_, ejected, _, err := s.ReadExtras(ctx)
	if err != nil || !slices.Equal(slices.Collect(maps.Keys(ejected)), []string{three[0]}) {
		t.Errorf("ReadExtras: got ejected %v (err %v), want %s", ejected, err, three[0])
	}
	// It ends by itself.
	waitFor(t, "the ejection to end", func() bool {
		_, ejected, _, _ := s.ReadExtras(ctx)
		return len(ejected) == 0
	})
}

// EJECT_MAX_PERCENT: never more than that share of the list's distinct
// entries is ejected at once, whatever the number of dispatchers asking;
// an entry not in the list is not ejected.
func TestEjectionCap(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	four := append(slices.Clone(three), "http://127.0.0.1:5003")
	if err := s.Replace(ctx, append(slices.Clone(four), four[0])); err != nil { // four[0] twice: weight 2
		t.Fatal(err)
	}
	p := store.EjectPolicy{Base: time.Minute, MaxPercent: 50}
	for i, want := range []bool{true, true, false, false} {
		e, err := s.Eject(ctx, four[i], p)
		if err != nil {
			t.Fatal(err)
		}
		if e.Ejected != want || e.Capped == want {
			t.Errorf("eject %s (%d of 4 distinct, 50%%): got %+v, want ejected %v", four[i], i+1, e, want)
		}
		if !want && (e.EjectedNow != 2 || e.Pool != 4) {
			t.Errorf("capped: got %d of %d counted, want 2 of 4", e.EjectedNow, e.Pool)
		}
	}
	if e, _ := s.Eject(ctx, "http://127.0.0.1:6000", p); !e.NotIn || e.Ejected {
		t.Errorf("eject an entry not in the list: got %+v, want NotIn", e)
	}
	// 0% ejects nothing; 100% may eject all but none is left out.
	s2, _ := seededStore(t)
	if e, _ := s2.Eject(ctx, three[0], store.EjectPolicy{Base: time.Minute, MaxPercent: 0}); e.Ejected {
		t.Errorf("MaxPercent 0: got %+v, want capped", e)
	}
}

// The rotation step skips ejected entries like down ones; when every
// other entry is down, an ejected one still serves rather than none.
func TestNextStepsOverEjectedEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	if _, err := s.Eject(ctx, three[1], store.EjectPolicy{Base: time.Minute, MaxPercent: 50}); err != nil {
		t.Fatal(err)
	}
	counts := concurrentPicks(t, rot(s), 10, 20)
	if want := map[string]int{three[0]: 100, three[2]: 100}; !maps.Equal(counts, want) {
		t.Errorf("picks with %s ejected: got %v, want %v", three[1], counts, want)
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[0], three[2])
	expectPicks(t, s, []string{three[1], three[1]})
	// Its time comes: back in the rotation.
	srv.Client.Del(ctx, s.DownKey())
	srv.Client.ZAdd(ctx, "{servers}:ejected", redisZ(time.Now().Add(-time.Second), three[1]))
	counts = concurrentPicks(t, rot(s), 3, 10)
	if want := map[string]int{three[0]: 10, three[1]: 10, three[2]: 10}; !maps.Equal(counts, want) {
		t.Errorf("picks after the ejection ended: got %v, want %v", counts, want)
	}
}

// redisZ is a sorted set member scored with t in milliseconds, as the
// ejected set holds them.
func redisZ(t time.Time, member string) redis.Z {
	return redis.Z{Score: float64(t.UnixMilli()), Member: member}
}
