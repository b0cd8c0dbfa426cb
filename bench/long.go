package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The long group (-modes long): what a dispatcher costs as its list grows
// (issue 21). Four proxying dispatchers, least-conn and round robin, each
// on a list of 3 entries and on a list of longEntries entries over the
// same three backends, each with a dashboard open (GET /events, read to
// the end) for the whole run. The 3-entry dispatcher of each strategy is
// the reference of the one on the long list; besides requests/s, the bench
// counts the bytes Redis receives per request (INFO stats
// total_net_input_bytes) and, after the rounds, what an idle dashboard is
// sent per second.

// longEntries is the long list's length.
const longEntries = 10000

// The lists of the long group, beside the stack's own "servers".
const (
	shortKey = "short"
	longKey  = "long"
)

// Targets of issue 21, as ratios within one run and counted bytes.
const (
	minLongListThroughput = 0.5      // long list rps / 3-entry list rps, at least
	maxRedisBytesPerReq   = 1024     // bytes Redis receives per proxied request, at most
	maxIdleDashboardBytes = 64 << 10 // bytes per second an idle dashboard is sent, at most
	idleDashboardWindow   = 3 * time.Second
)

// longContestants are the long group's dispatchers; each strategy's 3-entry
// one is its reference (see checks).
func longContestants() []*contestant {
	mk := func(key, name, list string, lmove bool, env ...string) *contestant {
		return &contestant{key: key, group: groupLong, name: name, list: list, lmove: lmove, rotates: true,
			env: append([]string{"MODE=proxy", "REDIS_KEY=" + list}, env...)}
	}
	return []*contestant{
		mk("lc-3", "least-conn, 3 entries", shortKey, false, "STRATEGY=least-conn"),
		mk("lc-10k", "least-conn, 10,000 entries", longKey, false, "STRATEGY=least-conn"),
		mk("rr-3", "round robin, 3 entries", shortKey, true, "STRATEGY=round-robin", "ROTATION=redis"),
		mk("rr-10k", "round robin, 10,000 entries", longKey, true, "STRATEGY=round-robin", "ROTATION=redis"),
	}
}

// startLongBackends starts three backends that answer every path as the
// backend program answers GET / (the entries of the long list differ by
// their path, /e0 to /e9999, which the backend program would answer
// 404), and seeds the short and the long list over them. They run in this
// process, on loopback ports, as simple as the backend program's GET /
// with no LATENCY.
func (s *stack) startLongBackends(ctx context.Context) error {
	var short []string
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		name := fmt.Sprintf("long%d", i+1)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			io.WriteString(w, "Hello, World!")
		})}
		go srv.Serve(ln)
		s.closers = append(s.closers, srv.Close)
		short = append(short, "http://"+ln.Addr().String())
		s.longNames = append(s.longNames, name)
	}
	s.longBackends = short
	long := make([]string, longEntries)
	for i := range long {
		long[i] = fmt.Sprintf("%s/e%d", short[i%3], i)
	}
	if err := store.NewStore(s.redis, shortKey, nil).Replace(ctx, short); err != nil {
		return err
	}
	return store.NewStore(s.redis, longKey, nil).Replace(ctx, long)
}

// dashboard is an open GET /events, read to the end, its bytes counted.
type dashboard struct {
	bytes atomic.Int64
	close func() error
}

// openDashboard opens admin's /events and reads it in the background.
func openDashboard(ctx context.Context, admin string) (*dashboard, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/events", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s/events: %s", admin, resp.Status)
	}
	d := &dashboard{close: resp.Body.Close}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			d.bytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return d, nil
}

// idleDashboards measures, with no load, the bytes per second each long
// group dispatcher's open dashboard is sent, over idleDashboardWindow,
// after a second for the last changes of the load to arrive.
func idleDashboards(ctx context.Context, cs []*contestant) (map[string]float64, error) {
	if !slices.ContainsFunc(cs, func(c *contestant) bool { return c.dash != nil }) {
		return nil, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Second):
	}
	before := map[string]int64{}
	for _, c := range cs {
		if c.dash != nil {
			before[c.key] = c.dash.bytes.Load()
		}
	}
	if len(before) == 0 {
		return nil, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(idleDashboardWindow):
	}
	out := map[string]float64{}
	for _, c := range cs {
		if c.dash != nil {
			out[c.key] = float64(c.dash.bytes.Load()-before[c.key]) / idleDashboardWindow.Seconds()
		}
	}
	return out, nil
}

// netInput is how many bytes Redis has received so far.
func netInput(ctx context.Context, rdb *redis.Client) (int64, error) {
	return redistest.Stat(ctx, rdb, "total_net_input_bytes")
}
