package store_test

import (
	"context"
	"testing"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The hot path, against a real redis-server on a unix socket. Compare the
// three parallel benchmarks within one run (go test -bench . -cpu 1,2,8):
//
//	BenchmarkPlainLMOVEParallel  one LMOVE round trip per pick, as the tutorial does
//	BenchmarkNextParallel        Store.Next, concurrent picks sharing round trips
//	BenchmarkLocalNextParallel   Local.Next, no Redis at all: the ceiling
func startBench(b *testing.B) *store.Store {
	b.Helper()
	srv := redistest.Start(b)
	s := store.NewStore(srv.Client, "servers", nil)
	if err := s.Replace(context.Background(), three); err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkNext(b *testing.B) {
	s := startBench(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := rot(s).Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNextParallel(b *testing.B) {
	s := startBench(b)
	ctx := context.Background()
	b.SetParallelism(32) // requests in flight per GOMAXPROCS, as under load
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rot(s).Next(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := rot(s).Stats()
	b.ReportMetric(float64(st.Requests)/float64(max(st.RoundTrips, 1)), "picks/roundtrip")
}

func BenchmarkPlainLMOVEParallel(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	if err := srv.Client.RPush(ctx, "servers", three[0], three[1], three[2]).Err(); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e, err := srv.Client.LMove(ctx, "servers", "servers", "RIGHT", "LEFT").Result()
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := backend.Parse(e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
