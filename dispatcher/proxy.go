package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spreadlb/spread/internal/balance"
)

// MODE=proxy: instead of redirecting the client, the dispatcher forwards
// the request to the backend it picked and relays the answer, with the
// standard library's httputil.ReverseProxy. Bodies stream both ways,
// WebSocket and other upgrades pass through, hop-by-hop headers are
// dropped, and the backend's own headers (X-Backend) reach the client.
//
// Where a request goes: scheme and host come only from the picked entry,
// which backend.Parse has validated (ProxyRequest.SetURL); the
// request supplies the path, which is cleaned of dot segments and joined to
// the entry's exactly as a redirect's is (joinPath), and the query.
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
// PROXY_RETRY_ON can also retry a per-try timeout or a 5xx answer, and
// RETRY_BUDGET bounds the retries in flight (retrybudget.go).

// proxier delivers in MODE=proxy: it forwards the request to the picked
// backend with rp and relays the answer.
type proxier struct {
	retries  int          // PROXY_RETRIES
	retry    *retryPolicy // PROXY_RETRY_ON, PROXY_TRY_TIMEOUT, RETRY_BUDGET (retrybudget.go)
	log      *slog.Logger
	rp       *httputil.ReverseProxy
	inflight func(backend string) prometheus.Gauge // spread_inflight's child for backend; nil: not counted

	// connectFailed is called each time connecting to a backend fails,
	// whether the request is retried or not. serve counts it in
	// spread_proxy_connect_errors_total; it is also the hook for a health
	// checker that wants to hear of failures as they happen.
	connectFailed func(backend string, err error)
	retried       func() // called when a request moves on to the next step
	// outcome, if set, hears how each attempt ended, after the strategy
	// does (Backend.Done): outlier ejection counts the failures (eject.go).
	outcome func(b balance.Backend, r balance.Result)
}

// attempt is one try at delivering a request to one backend. The handler
// puts it in the outgoing request's context; Rewrite, ModifyResponse and
// ErrorHandler, which only see the request, read and fill it.
type attempt struct {
	backend  *url.URL
	start    time.Time     // when delivering began
	latency  time.Duration // from start to the response headers, or to the failure
	mayRetry bool          // a failed dial may move on to the next backend
	retry    bool          // set by the ErrorHandler: nothing was written, try the next one
	status   int           // the backend's status code, once it answered
	err      error         // set by the ErrorHandler: why delivering failed
	try      tryState      // the retry policy's part (retrybudget.go)
}

type attemptKey struct{}

func attemptOf(r *http.Request) *attempt {
	a, _ := r.Context().Value(attemptKey{}).(*attempt)
	return a
}

// newProxier returns the deliverer of MODE=proxy. connectFailed is called
// each time connecting to a backend fails, whether the request is retried or
// not, retried when a request moves on to the next pick; nil means nothing
// to call.
func newProxier(cfg proxyConfig, log *slog.Logger, connectFailed func(backend string, err error), retried func()) *proxier {
	if connectFailed == nil {
		connectFailed = func(string, error) {}
	}
	if retried == nil {
		retried = func() {}
	}
	p := &proxier{retries: cfg.retries, retry: &retryPolicy{cfg: cfg.retry}, log: log, connectFailed: connectFailed, retried: retried}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			b := attemptOf(r.In).backend
			r.SetURL(b) // scheme, host, Host: the validated entry only
			// The path a redirect would send the client to: the
			// request's, cleaned of dot segments, under the entry's.
			r.Out.URL.Path, r.Out.URL.RawPath = joinPath(b, r.In.URL)
			r.SetXForwarded()
		},
		Transport: newTransport(cfg),
		ModifyResponse: func(res *http.Response) error {
			if a := attemptOf(res.Request); a != nil {
				a.status, a.latency = res.StatusCode, time.Since(a.start)
				return p.retry.answered(&a.try, a.mayRetry, res.StatusCode)
			}
			return nil
		},
		ErrorHandler: p.failed,
		BufferPool:   copyBuffers{},
		// The ReverseProxy's own complaints (an answer cut short while it
		// was copied) in the dispatcher's log, at warn, not on stderr in
		// the standard logger's format.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// FlushInterval 0: a response of unknown length (streamed,
		// chunked) or text/event-stream is flushed after every write
		// anyway; one of known length is copied as it comes.
	}
	return p
}

// copyBufferSize is the size of the buffers that copy an answer's body to
// the client: the ReverseProxy's own default, 32 KiB.
const copyBufferSize = 32 << 10

// copyBufferPool holds the copy buffers between requests. Without it the
// ReverseProxy allocates a new 32 KiB buffer for every answer, however
// small: three quarters of the bytes a proxied request allocated, and most
// of the garbage collector's work (docs/performance.md). It holds array
// pointers, so that putting a buffer back allocates nothing.
var copyBufferPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// copyBuffers is the ReverseProxy's BufferPool: copyBufferPool's buffers.
type copyBuffers struct{}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[copyBufferSize]byte)[:] }

// Put takes back a buffer that Get returned; any other is left to the
// garbage collector.
func (copyBuffers) Put(b []byte) {
	if cap(b) >= copyBufferSize {
		copyBufferPool.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}

// newTransport is the client side of the proxy: direct connections only
// (no HTTP_PROXY from the environment), bounded dial and response-header
// waits, and enough idle connections per backend for a busy dispatcher.
// DisableCompression: the client's Accept-Encoding goes to the backend as
// it is, and the answer comes back as the backend encoded it. (Otherwise
// the transport asks for gzip on behalf of a client that did not, and
// unpacks the answer: work for the dispatcher, a lost Content-Length for
// the client.)
func newTransport(cfg proxyConfig) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DisableCompression:    true,
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

func (p *proxier) deliver(c echo.Context, b balance.Backend, try int) (retry bool) {
	req := c.Request()
	a := &attempt{backend: b.URL, start: time.Now(), mayRetry: try < p.retries && replayable(req)}
	if p.inflight != nil {
		name, _ := c.Get(backendKey).(string) // b.URL as front.handle noted it (chose)
		g := p.inflight(name)
		g.Inc()
		defer g.Dec()
	}
	p.sendOnce(answerWriter{c.Response()}, req, b, a, try)
	if a.retry {
		p.retried()
		return true
	}
	if a.status == http.StatusSwitchingProtocols && a.err == nil {
		// The proxy wrote 101 on the hijacked connection, past Echo's
		// Response: record it for the log and metrics. (With an error,
		// the switch was refused, a protocol not asked for, and the
		// client got failed's answer.)
		c.Response().Status = a.status
	}
	return false
}

// answerWriter is the ResponseWriter the ReverseProxy writes the answer
// to: Echo's Response, except that a backend's informational answers
// (1xx: 100 Continue, 103 Early Hints), which the ReverseProxy relays as
// they come, go to the client without committing it. Echo takes the first
// WriteHeader for the answer and ignores the next ones, so the client got
// 200 instead of the backend's final status, and the request was counted
// and logged with the 1xx. (101 is final: the ReverseProxy hijacks the
// connection for it, and deliver records it.)
type answerWriter struct{ *echo.Response }

func (w answerWriter) WriteHeader(code int) {
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.Response.Writer.WriteHeader(code)
		return
	}
	w.Response.WriteHeader(code)
}

// errBodyCut is the Err of an attempt whose answer was cut short while the
// client was still there: the backend's body ended before its length, or
// its connection broke.
var errBodyCut = errors.New("the backend's answer was cut short")

// sendOnce sends req to b once and settles its accounts: the retry
// budget's counts, the strategy's Done (a least-conn count released), and
// ejection's outcome. The ReverseProxy aborts the handler with
// panic(http.ErrAbortHandler) when copying the answer fails (the client
// left, or the backend's body was cut), so they are settled in a defer,
// and the panic goes on to net/http, which closes the connection.
func (p *proxier) sendOnce(w http.ResponseWriter, req *http.Request, b balance.Backend, a *attempt, try int) {
	ctx := p.retry.begin(req.Context(), try, &a.try, !hasBody(req))
	defer func() {
		p.retry.end(&a.try)
		res := balance.Result{Latency: a.latency, Duration: time.Since(a.start), Status: a.status, Err: a.err}
		v := recover()
		if v != nil && res.Err == nil {
			res.Err = errBodyCut
			if req.Context().Err() != nil {
				res.Err = context.Canceled // a client that left says nothing of the backend
			}
		}
		b.Done(res)
		if p.outcome != nil {
			p.outcome(b, res)
		}
		if v != nil {
			panic(v)
		}
	}()
	p.rp.ServeHTTP(w, req.WithContext(context.WithValue(ctx, attemptKey{}, a)))
}

// failed is the ReverseProxy's ErrorHandler: the request could not be
// delivered, or no answer came. A failed connection is reported to
// connectFailed and, if the attempt may, left for the next backend without
// writing anything; otherwise the client gets 502, or 504 for a timeout,
// and a client that left is recorded as 499 (statusClientClosed).
func (p *proxier) failed(w http.ResponseWriter, r *http.Request, err error) {
	a := attemptOf(r)
	backend := ""
	if a != nil {
		backend = a.backend.String()
		a.err, a.latency = err, time.Since(a.start)
	}
	tryOut := timedOut(r, err)
	gone := r.Context().Err() != nil && !tryOut
	connect := isConnectError(err) && !gone && !tryOut
	if connect && a != nil {
		p.connectFailed(backend, err)
	}
	if a != nil && p.retry.retryAfter(r, err, connect, a.mayRetry) {
		p.log.Warn("backend failed; trying the next one", "backend", backend, "err", err)
		a.retry = true
		return
	}
	status, msg := http.StatusBadGateway, "bad gateway: the backend could not be reached or did not answer"
	var ne net.Error
	switch {
	case gone:
		p.log.Debug("client gone while proxying", "backend", backend, "path", r.URL.Path)
		w.WriteHeader(statusClientClosed)
		return
	case tryOut || errors.As(err, &ne) && ne.Timeout() && !connect:
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
		return !hasBody(r)
	}
	return false
}

// hasBody reports whether r comes with a body to send on.
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 || len(r.TransferEncoding) > 0
}

// proxyMetrics are the metrics MODE=proxy adds to the dispatcher's registry:
//
//	spread_proxy_connect_errors_total{backend}  counter: connections to a backend that
//	    failed (refused, unreachable, PROXY_DIAL_TIMEOUT), retried or not. A health
//	    check can read it, or take over the proxier's connectFailed hook.
//	spread_proxy_retries_total                  counter: requests moved on to the next
//	    rotation step after a failure that PROXY_RETRY_ON names.
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
			Help: "Requests that moved on to the next rotation step after a failure that PROXY_RETRY_ON names (a failed connection by default), in MODE=proxy.",
		}),
	}
	m.reg.MustRegister(pm.connectErrors, pm.retried)
	return pm
}

func (pm *proxyMetrics) connectFailed(backend string, _ error) {
	pm.connectErrors.WithLabelValues(backend).Inc()
}
