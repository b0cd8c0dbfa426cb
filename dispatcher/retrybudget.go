package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spreadlb/spread/internal/app"
)

// Retries in MODE=proxy, as Envoy's router does them (retry_on,
// per_try_timeout, retry_budget), on top of PROXY_RETRIES:
//
//   - PROXY_RETRY_ON says which failures send a request on to the next
//     rotation step: connect-failure (the default: connecting failed, no
//     byte was sent), per-try-timeout (no response headers within
//     PROXY_TRY_TIMEOUT; the attempt is abandoned, its connection closed,
//     so a backend that queues sees its client leave) and 5xx (the backend
//     answered 500-599; that answer is dropped, never relayed).
//   - PROXY_TRY_TIMEOUT bounds each attempt's wait for the response
//     headers, for a request without a body (a body's upload may take the
//     client any time, and such a request is never retried); without
//     per-try-timeout in PROXY_RETRY_ON, it answers 504.
//   - RETRY_BUDGET caps the retries in flight at a share of the requests
//     in flight from this dispatcher to the backends, retries included (Envoy's retry_budget.budget_percent,
//     20% when a budget is configured), never below minRetryConcurrency
//     (its min_retry_concurrency, 3), so that a quiet dispatcher still
//     retries. A retry past the cap is not made: the client gets the
//     failure, and spread_proxy_retries_refused_total counts it.
//
// Only an idempotent request without a body is ever sent again
// (replayable), at most PROXY_RETRIES more times. Retries are what
// amplifies an overload: when a backend slows, every request that times
// out on it is sent again, and the load on the pool grows by the share
// that fails; the budget bounds that growth (docs/lab.md#retries).

var (
	proxyRetryOnSetting = app.Setting{Name: "PROXY_RETRY_ON", Default: retryOnConnect,
		Usage: "MODE=proxy: which failures send an idempotent request without a body to the next backend, comma-separated: connect-failure, per-try-timeout (needs PROXY_TRY_TIMEOUT), 5xx"}
	proxyTryTimeoutSetting = app.Setting{Name: "PROXY_TRY_TIMEOUT", Default: "0",
		Usage: "MODE=proxy: how long each attempt of a request without a body may wait for the response headers before it is abandoned (then retried with PROXY_RETRY_ON=per-try-timeout, else 504); 0: no limit but PROXY_RESPONSE_TIMEOUT"}
	retryBudgetSetting = app.Setting{Name: "RETRY_BUDGET", Default: "0",
		Usage: "MODE=proxy: the most retries in flight, as a percentage of the requests in flight at this dispatcher (Envoy's default budget: 20%), but always at least 3; 0: no budget"}
)

// The failures PROXY_RETRY_ON names, Envoy's names.
const (
	retryOnConnect    = "connect-failure"
	retryOnTryTimeout = "per-try-timeout"
	retryOn5xx        = "5xx"
)

// minRetryConcurrency is how many retries may always be in flight,
// whatever the budget: Envoy's min_retry_concurrency default.
const minRetryConcurrency = 3

// retryConfig is PROXY_RETRY_ON, PROXY_TRY_TIMEOUT and RETRY_BUDGET, checked.
type retryConfig struct {
	onConnect, onTimeout, on5xx bool
	tryTimeout                  time.Duration // 0: none
	budget                      float64       // a fraction; 0: no budget
}

func loadRetry(getenv func(string) string) (retryConfig, error) {
	var rc retryConfig
	v := proxyRetryOnSetting.Get(getenv)
	kinds := []string{retryOnConnect, retryOnTryTimeout, retryOn5xx}
	for k := range strings.SplitSeq(v, ",") {
		switch strings.TrimSpace(k) {
		case retryOnConnect:
			rc.onConnect = true
		case retryOnTryTimeout:
			rc.onTimeout = true
		case retryOn5xx:
			rc.on5xx = true
		default:
			return rc, fmt.Errorf("%s=%q: want a comma-separated list of %s", proxyRetryOnSetting.Name, v, strings.Join(kinds, ", "))
		}
	}
	v = proxyTryTimeoutSetting.Get(getenv)
	d, err := time.ParseDuration(v)
	if v == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		return rc, fmt.Errorf("%s=%q: want 0 or a positive duration such as 250ms", proxyTryTimeoutSetting.Name, v)
	}
	rc.tryTimeout = d
	if rc.onTimeout && d == 0 {
		return rc, fmt.Errorf("%s=%q includes %s, which needs %s: want a positive duration there, such as 250ms",
			proxyRetryOnSetting.Name, proxyRetryOnSetting.Get(getenv), retryOnTryTimeout, proxyTryTimeoutSetting.Name)
	}
	v = retryBudgetSetting.Get(getenv)
	p, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || !(p >= 0 && p <= 100) {
		return rc, fmt.Errorf("%s=%q: want a percentage from 0 (no budget) to 100, such as 20%%", retryBudgetSetting.Name, v)
	}
	rc.budget = p / 100
	return rc, nil
}

// retrySettings are this file's settings, for the dispatcher's table.
var retrySettings = []app.Setting{proxyRetryOnSetting, proxyTryTimeoutSetting, retryBudgetSetting}

// retryPolicy decides, for the proxier, whether a failed attempt goes on
// to the next backend, and keeps the counts the budget needs.
type retryPolicy struct {
	cfg      retryConfig
	active   atomic.Int64 // attempts in flight, first tries and retries: Envoy's active requests
	retrying atomic.Int64 // retries (attempts after the first) in flight
	refused  func()       // a retry the budget refused; nil: not counted
}

// errTryTimeout is the cause of an attempt's context when
// PROXY_TRY_TIMEOUT ran out before the response headers.
var errTryTimeout = errors.New("no response headers within PROXY_TRY_TIMEOUT")

// errRetryStatus is what ModifyResponse returns for a 5xx answer that is
// dropped and retried: the ReverseProxy then closes the answer and calls
// the ErrorHandler.
var errRetryStatus = errors.New("the backend answered 5xx; retrying")

// tryState is one attempt's part of the policy.
type tryState struct {
	timer  *time.Timer // PROXY_TRY_TIMEOUT's; nil without it
	cancel context.CancelCauseFunc
	retry  bool // try > 0
}

// begin counts an attempt (try 0 is the request's first) in ts, the
// attempt's own part of the policy, and returns the context it runs in,
// with PROXY_TRY_TIMEOUT's deadline if set and timed (the request has no
// body: the per-try timeout bounds the wait for the headers, and sending
// a body, which may take the client any time, would count against it;
// such a request is never retried anyway, and PROXY_RESPONSE_TIMEOUT
// bounds it). Call end(ts) once the attempt is over. Each attempt is
// counted on its own, so that a request whose retry finds no backend to
// pick leaves no count behind. Without PROXY_TRY_TIMEOUT (the default) the
// attempt runs in the request's own context: begin and end allocate
// nothing on the request's path.
func (rp *retryPolicy) begin(ctx context.Context, try int, ts *tryState, timed bool) context.Context {
	rp.active.Add(1)
	if try > 0 {
		rp.retrying.Add(1)
	}
	*ts = tryState{retry: try > 0}
	if rp.cfg.tryTimeout > 0 && timed {
		ctx, ts.cancel = context.WithCancelCause(ctx)
		cancel := ts.cancel
		ts.timer = time.AfterFunc(rp.cfg.tryTimeout, func() { cancel(errTryTimeout) })
	}
	return ctx
}

// end uncounts the attempt that begin counted in ts.
func (rp *retryPolicy) end(ts *tryState) {
	if ts.timer != nil {
		ts.timer.Stop()
		ts.cancel(context.Canceled)
	}
	if ts.retry {
		rp.retrying.Add(-1)
	}
	rp.active.Add(-1)
}

// answered is called when the response headers arrive: the per-try
// timeout no longer applies. It returns errRetryStatus when the answer is
// a 5xx to drop and retry.
func (rp *retryPolicy) answered(ts *tryState, mayRetry bool, status int) error {
	if ts == nil {
		return nil
	}
	if ts.timer != nil && !ts.timer.Stop() {
		// The timeout fired as the headers arrived: the attempt's context is
		// cancelled, or about to be, so its body would be cut short. It
		// timed out, like one whose headers came a moment later.
		return errTryTimeout
	}
	if status >= 500 && status <= 599 && rp.cfg.on5xx && mayRetry && rp.allow() {
		return errRetryStatus
	}
	return nil
}

// timedOut reports whether r's attempt, which failed with err, ran out of
// PROXY_TRY_TIMEOUT.
func timedOut(r *http.Request, err error) bool {
	return errors.Is(err, errTryTimeout) || errors.Is(context.Cause(r.Context()), errTryTimeout)
}

// retryAfter reports whether an attempt that failed with err goes on to
// the next backend: a failed connection, a per-try timeout or a 5xx that
// PROXY_RETRY_ON names, when the attempt may retry and the budget allows.
// A 5xx was checked when it arrived (answered).
func (rp *retryPolicy) retryAfter(r *http.Request, err error, connect, mayRetry bool) bool {
	switch {
	case errors.Is(err, errRetryStatus):
		return true
	case !mayRetry:
		return false
	case timedOut(r, err):
		return rp.cfg.onTimeout && rp.allow()
	case connect:
		return rp.cfg.onConnect && rp.allow()
	}
	return false
}

// allow reports whether one more retry fits the budget.
func (rp *retryPolicy) allow() bool {
	if rp.cfg.budget <= 0 {
		return true
	}
	limit := max(minRetryConcurrency, int64(rp.cfg.budget*float64(rp.active.Load())))
	if rp.retrying.Load() < limit {
		return true
	}
	if rp.refused != nil {
		rp.refused()
	}
	return false
}

// newRetryRefused registers spread_proxy_retries_refused_total: retries
// that RETRY_BUDGET did not allow.
func newRetryRefused(m *metrics) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "spread_proxy_retries_refused_total",
		Help: "Retries that RETRY_BUDGET did not allow in MODE=proxy: the client got the failure.",
	})
	m.reg.MustRegister(c)
	return c
}
