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

// BenchmarkProxy is MODE=proxy's request path as serve builds it (Echo,
// the request metrics and log, the timed pick, the ReverseProxy with
// spread_inflight) in front of three httptest backends on loopback; the
// client side is in-process, so no socket carries the client's request.
// Its allocations per request are the proxy's allocation budget
// (docs/performance.md). They include the backends' own, which the
// "direct" sub-benchmark measures alone: the same request sent straight to
// a backend with a plain http.Transport, no dispatcher in between.
func BenchmarkProxy(b *testing.B) {
	var urls []string
	for range 3 {
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", "b")
			io.WriteString(w, "Hello, World!")
		}))
		b.Cleanup(be.Close)
		urls = append(urls, be.URL)
	}
	srv := redistest.Start(b)
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st := store.NewStore(srv.Client, "servers", log)
	ctx := context.Background()
	if err := st.Replace(ctx, urls); err != nil {
		b.Fatal(err)
	}
	pl := pool.New(st, 0, nil)
	if err := pl.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	cfg := proxyConfig{retries: 2, dialTimeout: 2 * time.Second, responseTimeout: 30 * time.Second}
	for _, bc := range []struct {
		name   string
		picker balance.Picker
	}{
		{"redis", balance.NewShared(store.NewRotation(st))},
		{"local", balance.NewLocal(pl)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := newMetrics("proxy", "round-robin")
			p := newProxier(cfg, log, nil, nil)
			p.inflight = m.inflightGauge
			runParallel(b, newFront(&front{picker: timedPicker{bc.picker, m}, timeout: time.Second, log: log, deliver: p}, observeRequests(m, log)))
		})
	}
	b.Run("direct", func(b *testing.B) {
		tr := newTransport(cfg)
		defer tr.CloseIdleConnections()
		runParallel(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out, _ := http.NewRequestWithContext(r.Context(), r.Method, urls[0]+r.URL.RequestURI(), nil)
			res, err := tr.RoundTrip(out)
			if err != nil {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			defer res.Body.Close()
			w.WriteHeader(res.StatusCode)
			buf := copyBuffers{}.Get() // as the proxy copies, without a 32 KiB allocation
			defer copyBuffers{}.Put(buf)
			io.CopyBuffer(w, res.Body, buf)
		}))
	})
}

// runParallel sends GET / to h from 32 goroutines per GOMAXPROCS, each
// answer into a reused discardWriter, and checks each answer.
func runParallel(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		w := &discardWriter{header: http.Header{}}
		for pb.Next() {
			clear(w.header)
			w.status, w.n = 0, 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK || w.n != len("Hello, World!") {
				b.Errorf("got %d and %d bytes, want 200 and %d bytes", w.status, w.n, len("Hello, World!"))
				return
			}
		}
	})
}

// discardWriter is a ResponseWriter that keeps the status and counts the
// body's bytes, and allocates nothing of its own per request (unlike
// httptest.ResponseRecorder), so that the allocations counted are the
// handler's.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}
