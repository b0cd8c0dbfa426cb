// Package members keeps the rotation list in step with backends that come
// and go by themselves.
//
// A backend started with REGISTER=1 runs a Registrar: every heartbeat it
// writes its registration to Redis, a key of its own that lives three
// heartbeats (store.Register), so that it is in the list within a
// heartbeat of starting, and again after Redis lost it (a restart without
// persistence, FLUSHALL, a failover). On SIGTERM it deregisters first,
// waits until its entry has left the list and the dispatchers' snapshots,
// and only then stops taking requests (Leave).
//
// The list has one writer for all this: the dispatcher that holds the
// health checks' lease runs a Reconciler, which twice a second adds live
// registrations to the list and takes gone ones out (store.Reconcile), in
// one script that first checks the lease, so two dispatchers never both
// write. Entries seeded or added by hand are never removed by it. A crashed
// backend's registration expires by its TTL and the reconciler finds it
// gone by looking at it, not by a keyspace notification.
package members

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// DefaultHeartbeat is HEARTBEAT's default: how often a backend renews its
// registration.
const DefaultHeartbeat = 2 * time.Second

// TTL is how long a registration lives without a heartbeat: three of them.
func TTL(heartbeat time.Duration) time.Duration { return 3 * heartbeat }

// Settle is how long a leaving backend goes on serving once its entry has
// left the list: a dispatcher checks whether the list changed every
// pool.DefaultRefresh, and a request picked from its old snapshot may
// still be on its way.
const Settle = pool.DefaultRefresh + 250*time.Millisecond

// Registrar is one backend's registration.
type Registrar struct {
	store     *store.Store
	url       string
	heartbeat time.Duration
	log       *slog.Logger
	stopped   chan struct{} // closed when Run returns
}

// NewRegistrar returns the registration of url (ADVERTISE_URL) in st's
// list, renewed every heartbeat. A nil log discards its messages.
func NewRegistrar(st *store.Store, url string, heartbeat time.Duration, log *slog.Logger) *Registrar {
	if heartbeat <= 0 {
		heartbeat = DefaultHeartbeat
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registrar{store: st, url: url, heartbeat: heartbeat, log: log, stopped: make(chan struct{})}
}

// URL is the URL it registers.
func (r *Registrar) URL() string { return r.url }

// Run registers now and then every heartbeat until ctx is done. A heartbeat
// that Redis fails is logged once per spell of failures, and the next one
// tries again.
func (r *Registrar) Run(ctx context.Context) {
	defer close(r.stopped)
	t := time.NewTicker(r.heartbeat)
	defer t.Stop()
	registered, failing := false, false
	for {
		hctx, cancel := context.WithTimeout(ctx, r.heartbeat)
		fresh, err := r.store.Register(hctx, r.url, TTL(r.heartbeat))
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			msg := "cannot register in redis; trying again every heartbeat"
			if errors.Is(err, pick.ErrNoPermission) {
				msg = "the redis user may not register this backend (docs/security.md); trying again every heartbeat"
			}
			r.log.Error(msg, "url", r.url, "key", r.store.MemberKey(r.url), "err", err)
		case err == nil && !registered:
			r.log.Info("registered: a dispatcher puts this backend in the list within a second", "url", r.url,
				"key", r.store.MemberKey(r.url), "heartbeat", r.heartbeat, "ttl", TTL(r.heartbeat))
		case err == nil && fresh:
			r.log.Warn("registered again: redis had lost the registration (restart, FLUSHALL or failover)", "url", r.url)
		case err == nil && failing:
			r.log.Info("registration renewed: redis answers again", "url", r.url)
		}
		failing = err != nil
		registered = registered || err == nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Leave deregisters (after Run has returned, so that no heartbeat writes
// the registration again), then waits until the entry the reconciler put in
// the list has left it and for Settle after that, so that no dispatcher
// sends a new request here once the backend stops taking them. An entry of
// the same URL seeded or added by hand stays in the list, and Leave does not
// wait for it. It returns when that is done or ctx is, whichever comes
// first.
func (r *Registrar) Leave(ctx context.Context) {
	select {
	case <-r.stopped:
	case <-ctx.Done():
		return
	}
	start := time.Now()
	err := r.store.Deregister(ctx, r.url)
	for err != nil && !errors.Is(err, pick.ErrNoPermission) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		err = r.store.Deregister(ctx, r.url)
	}
	if err != nil {
		r.log.Warn("cannot deregister; the registration expires by itself", "url", r.url, "ttl", TTL(r.heartbeat), "err", err)
		return
	}
	r.log.Info("deregistered: waiting for the entry to leave the list before refusing requests", "url", r.url)
	for {
		// Only the entry the reconciler put in the list leaves it; one
		// seeded or added by hand stays, and waiting for it would take
		// all of ctx. A Redis user that may not read the joined hash
		// waits for the URL to leave the list instead.
		in, err := r.store.Joined(ctx, r.url)
		if errors.Is(err, pick.ErrNoPermission) {
			in, err = r.store.InList(ctx, r.url)
		}
		if err != nil || !in {
			break
		}
		select {
		case <-ctx.Done():
			r.log.Warn("still in the list when the drain time ran out", "url", r.url, "waited", time.Since(start).Round(time.Millisecond))
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	seeded, _ := r.store.InList(ctx, r.url)
	select {
	case <-ctx.Done():
	case <-time.After(Settle):
	}
	if seeded {
		r.log.Info("the list still holds this URL, seeded or added by hand: that entry stays, and the health checks mark it down once the backend stops",
			"url", r.url, "key", r.store.Key())
		return
	}
	r.log.Info("out of the list", "url", r.url, "after", time.Since(start).Round(time.Millisecond))
}

// Reconciler writes the registrations into the list, while its dispatcher
// holds the health checks' lease.
type Reconciler struct {
	store *store.Store
	id    func() string // the lease holder's id: health.Checker.ID
	every time.Duration
	log   *slog.Logger
}

// NewReconciler returns the reconciler of st's list for the dispatcher whose
// health checks hold the lease as id(). A nil log discards its messages.
func NewReconciler(st *store.Store, id func() string, log *slog.Logger) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{store: st, id: id, every: store.ReconcileEvery, log: log}
}

// Run reconciles every store.ReconcileEvery until ctx is done. Without the
// lease a round writes nothing.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := r.Round(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && !failing:
			r.log.Warn("registrations not reconciled: redis fails; the list stays as it is", "err", err)
		case err == nil && failing:
			r.log.Info("registrations reconciled again")
		}
		failing = err != nil
	}
}

// Round reconciles once and logs what changed.
func (r *Reconciler) Round(ctx context.Context) (store.Reconciled, error) {
	rctx, cancel := context.WithTimeout(ctx, r.store.StepTimeout())
	defer cancel()
	res, err := r.store.Reconcile(rctx, r.id())
	if err != nil {
		return res, err
	}
	for _, u := range res.Added {
		r.log.Info("registered backend joins the list", "url", u, "key", r.store.Key())
	}
	for _, u := range res.Removed {
		r.log.Info("registered backend leaves the list: deregistered, or no heartbeat for its TTL", "url", u, "key", r.store.Key())
	}
	return res, nil
}
