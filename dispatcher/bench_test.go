package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The request path without the network: Echo, the pick, the redirect. The
// ratio of the sub-benchmarks is what each strategy costs per request in
// this process (make bench measures the shared rotation over real sockets).
func BenchmarkRedirect(b *testing.B) {
	srv := redistest.Start(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.NewStore(srv.Client, "servers", log)
	ctx := context.Background()
	if err := st.Replace(ctx, []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}); err != nil {
		b.Fatal(err)
	}
	pl := pool.New(st, 0, nil)
	if err := pl.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		picker balance.Picker
	}{
		{"redis", balance.NewShared(store.NewRotation(st))},
		{"local", balance.NewLocal(pl)},
		{"random", balance.NewRandom(pl)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newFront(&front{picker: bc.picker, timeout: time.Second, log: log, deliver: redirector{status: http.StatusFound}})
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest(http.MethodGet, "/some/path?q=1", nil)
				for pb.Next() {
					rec := httptest.NewRecorder()
					e.ServeHTTP(rec, req)
					if rec.Code != http.StatusFound {
						b.Errorf("got %d, want 302", rec.Code)
						return
					}
				}
			})
		})
	}
}
