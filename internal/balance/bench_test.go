package balance_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/spreadlb/spread/internal/balance"
)

// What one pick costs each strategy, concurrent picks included (make
// gobench). round-robin and least-conn make a Redis round trip per pick,
// shared by the picks waiting at the same time; the others none.
func BenchmarkPick(b *testing.B) {
	s, _ := seededStore(b)
	pl := readPool(b, s)
	for _, name := range balance.Names() {
		b.Run(name, func(b *testing.B) {
			p := newStrategy(b, name, map[string]string{"HASH_KEY": "header:X-User"}, env(s, pl, "bench-"+name))
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				r := get()
				i := 0
				for pb.Next() {
					i++
					r.Header.Set("X-User", fmt.Sprint(i))
					bk, err := p.Pick(context.Background(), r)
					if err != nil {
						b.Error(err)
						return
					}
					bk.Done(balance.Result{})
				}
			})
		})
	}
	b.Run("round-robin/local", func(b *testing.B) {
		l := balance.NewLocal(pl)
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Pick(context.Background(), nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
