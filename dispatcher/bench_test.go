package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/rotation"
)

// The request path without the network: Echo, the pick, the redirect. The
// ratio of the two sub-benchmarks is what the shared rotation costs per
// request in this process (make bench measures it over real sockets).
func BenchmarkRedirect(b *testing.B) {
	srv := redistest.Start(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := rotation.NewStore(srv.Client, "servers", log)
	ctx := context.Background()
	if err := store.Replace(ctx, []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}); err != nil {
		b.Fatal(err)
	}
	local := rotation.NewLocal(store, 0)
	if err := local.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		picker Picker
	}{{"redis", store}, {"local", local}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newRedirector(&redirector{picker: bc.picker, status: http.StatusFound, timeout: time.Second, log: log})
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
