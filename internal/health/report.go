package health

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/store"
)

// Reporter passes the failed connections a proxying dispatcher meets on to
// the shared health checks (store.ReportFailure: the lease holder counts
// each as a failed check in its next round), at most once a second per
// backend, and without holding up the request that met the failure.
type Reporter struct {
	store   *store.Store
	timeout time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	last map[string]time.Time // backend -> when it was last reported
}

// NewReporter returns a Reporter to st's health checks; each report waits
// at most timeout on Redis. A nil log discards its warnings.
func NewReporter(st *store.Store, timeout time.Duration, log *slog.Logger) *Reporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{store: st, timeout: timeout, log: log, last: map[string]time.Time{}}
}

// Report tells the health checks that connecting to backend failed.
func (f *Reporter) Report(backend string) {
	now := time.Now()
	f.mu.Lock()
	if t, ok := f.last[backend]; ok && now.Sub(t) < time.Second {
		f.mu.Unlock()
		return
	}
	if len(f.last) > 1024 { // backends come from the list; bound it anyway
		clear(f.last)
	}
	f.last[backend] = now
	f.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		if err := f.store.ReportFailure(ctx, backend); err != nil {
			f.log.Warn("cannot report a failed connection to the health checks", "backend", backend, "err", err)
		}
	}()
}
