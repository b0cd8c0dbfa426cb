package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/rotation"
)

// MODE=proxy: instead of redirecting the client, the dispatcher forwards
// the request to the backend it picked and relays the answer, with the
// standard library's httputil.ReverseProxy. Bodies stream both ways,
// WebSocket and other upgrades pass through, hop-by-hop headers are
// dropped, and the backend's own headers (X-Backend) reach the client.
//
// Where a request goes: scheme and host come only from the picked entry,
// which rotation.ParseBackend has validated (ProxyRequest.SetURL); the
// request supplies the path, which is joined to the entry's, and the query.
// The request's Host header, an absolute request URI or X-Forwarded-*
// headers cannot change the upstream: SetURL replaces scheme, host and
// Host, and Rewrite starts from a request with X-Forwarded-* removed.
//
// Retries: a request that could not be delivered because connecting to
// the backend failed (refused, unreachable, PROXY_DIAL_TIMEOUT ran out, the
// name does not resolve) takes the next rotation step and tries that
// backend, at most PROXY_RETRIES more times, when it is safe to send it
// again:
//
//   - the method is idempotent per RFC 9110 (GET, HEAD, OPTIONS, TRACE,
//     PUT, DELETE), and
//   - it has no body (Content-Length 0, not chunked): a body has been
//     handed to the transport, which closes it on failure, and buffering
//     bodies to replay them would hold uploads in memory.
//
// A failed dial sent no byte of the request, so even this is cautious;
// anything else (POST, a body, an error after connecting, a timeout
// waiting for the answer) gets 502 (504 for a timeout) at once, never a
// second delivery. Each retry is a real step of the shared rotation, so
// while a backend is down its neighbour in the list takes its turns.

// modeProxy is the mode label, and the dashboard's mode, for MODE=proxy.
const modeProxy = "proxy"

// The proxy's settings; config.go lists them in the settings table.
var (
	modeSetting = app.Setting{Name: "MODE", Default: modeRedirect,
		Usage: "redirect: answer each request with a redirect to the chosen backend; proxy: forward it there and relay the answer"}
	proxyRetriesSetting = app.Setting{Name: "PROXY_RETRIES", Default: "2",
		Usage: "MODE=proxy: how many more backends an idempotent request without a body tries when connecting fails, 0-10"}
	proxyDialTimeoutSetting = app.Setting{Name: "PROXY_DIAL_TIMEOUT", Default: "2s",
		Usage: "MODE=proxy: how long connecting to a backend may take"}
	proxyResponseTimeoutSetting = app.Setting{Name: "PROXY_RESPONSE_TIMEOUT", Default: "30s",
		Usage: "MODE=proxy: how long to wait for a backend's response headers once the request is sent (the body may then stream for as long as it takes)"}
)

// maxProxyRetries bounds PROXY_RETRIES.
const maxProxyRetries = 10

// proxyConfig is the proxy's part of the configuration.
type proxyConfig struct {
	retries         int
	dialTimeout     time.Duration
	responseTimeout time.Duration
}

// loadMode reads MODE and, whatever the mode, the proxy's settings, so that
// a bad value is refused at start even before it is used.
func loadMode(getenv func(string) string) (string, proxyConfig, error) {
	var pc proxyConfig
	mode := modeSetting.Get(getenv)
	if mode != modeRedirect && mode != modeProxy {
		return mode, pc, fmt.Errorf("%s=%q: want redirect or proxy", modeSetting.Name, mode)
	}
	v := proxyRetriesSetting.Get(getenv)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxProxyRetries {
		return mode, pc, fmt.Errorf("%s=%q: want a whole number from 0 to %d", proxyRetriesSetting.Name, v, maxProxyRetries)
	}
	pc.retries = n
	if pc.dialTimeout, err = duration(proxyDialTimeoutSetting, getenv); err != nil {
		return mode, pc, err
	}
	if pc.responseTimeout, err = duration(proxyResponseTimeoutSetting, getenv); err != nil {
		return mode, pc, err
	}
	return mode, pc, nil
}

// newFront returns the main port's server for cfg.mode: the redirector, or
// a proxier that picks the same way.
//
// Each failed connection is counted, and passed on to the shared health
// checks by report (nil: not passed on).
func newFront(cfg config, r *redirector, m *metrics, report func(backend string)) *echo.Echo {
	if cfg.mode != modeProxy {
		return newRedirector(r)
	}
	pm := newProxyMetrics(m)
	failed := func(backend string, err error) {
		pm.connectFailed(backend, err)
		if report != nil {
			report(backend)
		}
	}
	return newProxier(&proxier{picker: r.picker, timeout: r.timeout, retries: cfg.proxy.retries,
		log: r.log, connectFailed: failed, retried: pm.retried.Inc}, cfg.proxy)
}

// failureReporter passes failed connections on to the shared health checks
// (rotation.Store.ReportFailure: the lease holder counts each as a failed
// check in its next round), at most once a second per backend, and without
// holding up the request that met the failure.
type failureReporter struct {
	store   *rotation.Store
	timeout time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	last map[string]time.Time // backend -> when it was last reported
}

func newFailureReporter(store *rotation.Store, timeout time.Duration, log *slog.Logger) *failureReporter {
	return &failureReporter{store: store, timeout: timeout, log: log, last: map[string]time.Time{}}
}

func (f *failureReporter) report(backend string) {
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

// proxier is where every request on the main port is received in
// MODE=proxy: it asks the Picker for a backend and forwards the request
// there with rp.
type proxier struct {
	picker  Picker
	timeout time.Duration // how long to wait on the Picker, per pick
	retries int           // PROXY_RETRIES
	log     *slog.Logger
	rp      *httputil.ReverseProxy

	// connectFailed is called each time connecting to a backend fails,
	// whether the request is retried or not. serve counts it in
	// spread_proxy_connect_errors_total; it is also the hook for a health
	// checker that wants to hear of failures as they happen.
	connectFailed func(backend string, err error)
	retried       func() // called when a request moves on to the next step
}

// attempt is one try at delivering a request to one backend. The handler
// puts it in the outgoing request's context; Rewrite, ModifyResponse and
// ErrorHandler, which only see the request, read and fill it.
type attempt struct {
	backend  *url.URL
	mayRetry bool // a failed dial may move on to the next backend
	retry    bool // set by the ErrorHandler: nothing was written, try the next one
	status   int  // the backend's status code, once it answered
}

type attemptKey struct{}

func attemptOf(r *http.Request) *attempt {
	a, _ := r.Context().Value(attemptKey{}).(*attempt)
	return a
}

// newProxier returns the main port's Echo server in MODE=proxy: every
// method, every path goes to p.handle.
func newProxier(p *proxier, cfg proxyConfig) *echo.Echo {
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(attemptOf(r.In).backend) // scheme, host, Host: the validated entry only
			r.SetXForwarded()
		},
		Transport: newTransport(cfg),
		ModifyResponse: func(res *http.Response) error {
			if a := attemptOf(res.Request); a != nil {
				a.status = res.StatusCode
			}
			return nil
		},
		ErrorHandler: p.failed,
		// FlushInterval 0: a response of unknown length (streamed,
		// chunked) or text/event-stream is flushed after every write
		// anyway; one of known length is copied as it comes.
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Pre(pathFromSlash)
	e.Any("/*", p.handle)
	e.RouteNotFound("/*", p.handle)
	return e
}

// pathFromSlash gives request lines such as "GET http://host HTTP/1.1" a
// path that starts with "/", as newRedirector does, so that they reach the
// handler.
func pathFromSlash(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if u := c.Request().URL; len(u.Path) == 0 || u.Path[0] != '/' {
			u.Path, u.RawPath = "/"+u.Path, ""
		}
		return next(c)
	}
}

// newTransport is the client side of the proxy: direct connections only
// (no HTTP_PROXY from the environment), bounded dial and response-header
// waits, and enough idle connections per backend for a busy dispatcher.
func newTransport(cfg proxyConfig) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.dialTimeout,
		ResponseHeaderTimeout: cfg.responseTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

func (p *proxier) handle(c echo.Context) error {
	req := c.Request()
	replayable := replayable(req)
	for try := 0; ; try++ {
		backend, err := p.pick(req.Context())
		if err != nil {
			return p.noBackend(c, err)
		}
		chose(c, backend) // for the request log and metrics; the last one tried
		a := &attempt{backend: backend, mayRetry: replayable && try < p.retries}
		p.rp.ServeHTTP(c.Response(), req.WithContext(context.WithValue(req.Context(), attemptKey{}, a)))
		if !a.retry {
			if a.status == http.StatusSwitchingProtocols {
				// The proxy wrote 101 on the hijacked connection, past
				// Echo's Response: record it for the log and metrics.
				c.Response().Status = a.status
			}
			return nil
		}
		p.retried()
	}
}

// pick asks the Picker for a backend, waiting at most p.timeout.
func (p *proxier) pick(ctx context.Context) (*url.URL, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	backend, err := p.picker.Next(ctx)
	if err == nil && backend == nil {
		err = errors.New("the picker returned no backend and no error")
	}
	return backend, err
}

// noBackend answers a request for which no backend could be chosen, as the
// redirector does: 503, the reason, Retry-After.
func (p *proxier) noBackend(c echo.Context, err error) error {
	status, msg := explain(err)
	if c.Request().Context().Err() != nil {
		p.log.Debug("client gone before a backend was chosen", "path", c.Request().URL.Path)
	} else {
		p.log.Error("no backend for request", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "err", err)
	}
	c.Response().Header().Set("Retry-After", "1")
	return c.String(status, msg+"\n")
}

// failed is the ReverseProxy's ErrorHandler: the request could not be
// delivered, or no answer came. A failed connection is reported to
// connectFailed and, if the attempt may, left for the next backend without
// writing anything; otherwise the client gets 502, or 504 for a timeout.
func (p *proxier) failed(w http.ResponseWriter, r *http.Request, err error) {
	a := attemptOf(r)
	backend := ""
	if a != nil {
		backend = a.backend.String()
	}
	gone := r.Context().Err() != nil
	connect := isConnectError(err) && !gone
	if connect && a != nil {
		p.connectFailed(backend, err)
		if a.mayRetry {
			p.log.Warn("cannot connect to backend; trying the next one", "backend", backend, "err", err)
			a.retry = true
			return
		}
	}
	status, msg := http.StatusBadGateway, "bad gateway: the backend could not be reached or did not answer"
	var ne net.Error
	switch {
	case gone:
		p.log.Debug("client gone while proxying", "backend", backend, "path", r.URL.Path)
	case errors.As(err, &ne) && ne.Timeout() && !connect:
		status, msg = http.StatusGatewayTimeout, "gateway timeout: the backend did not answer in time"
		fallthrough
	default:
		p.log.Error("proxying failed", "method", r.Method, "path", r.URL.Path, "backend", backend, "status", status, "err", err)
	}
	http.Error(w, msg, status)
}

// isConnectError reports an error from connecting to the backend (dialing,
// resolving its name), after which no byte of the request was sent.
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// replayable reports whether a request may be sent to another backend after
// a failed connection: an idempotent method (RFC 9110, 9.2.2) and no body.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.ContentLength == 0 && len(r.TransferEncoding) == 0
	}
	return false
}

// proxyMetrics are the metrics MODE=proxy adds to the dispatcher's registry:
//
//	spread_proxy_connect_errors_total{backend}  counter: connections to a backend that
//	    failed (refused, unreachable, PROXY_DIAL_TIMEOUT), retried or not. A health
//	    check can read it, or take over the proxier's connectFailed hook.
//	spread_proxy_retries_total                  counter: requests moved on to the next
//	    rotation step after a failed connection.
type proxyMetrics struct {
	connectErrors *prometheus.CounterVec
	retried       prometheus.Counter
}

func newProxyMetrics(m *metrics) *proxyMetrics {
	pm := &proxyMetrics{
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spread_proxy_connect_errors_total",
			Help: "Connections to a backend that failed in MODE=proxy (refused, unreachable, PROXY_DIAL_TIMEOUT), retried or not.",
		}, []string{"backend"}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spread_proxy_retries_total",
			Help: "Requests that moved on to the next rotation step after a failed connection, in MODE=proxy.",
		}),
	}
	m.reg.MustRegister(pm.connectErrors, pm.retried)
	return pm
}

func (pm *proxyMetrics) connectFailed(backend string, _ error) {
	pm.connectErrors.WithLabelValues(backend).Inc()
}
