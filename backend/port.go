package main

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// trafficPort is the backend's PORT, which POST /control can take down and
// bring back. Down, it looks to clients as a stopped process does: the
// socket is closed, so a dial is refused; idle keep-alive connections are
// closed, and every connection still open is closed after the answer it is
// waiting for (which service gives at once: 503). Up, it listens again on
// the same address.
//
// The http.Server serves one listener for the whole life of the process:
// Accept waits while the port is down, so net/http never sees the socket
// come and go.
type trafficPort struct {
	srv   *http.Server
	addr  string   // host:port to listen on again: the port the first Listen got
	first net.Addr // what the first Listen got, for Addr

	mu      sync.Mutex
	ln      net.Listener  // nil while down
	changed chan struct{} // closed, and replaced, when ln changes or the port is closed
	closed  bool
}

var _ net.Listener = (*trafficPort)(nil)

// listenTraffic listens on host:port ("" is every interface; port 0 takes a
// free one, and going up again takes the same).
func listenTraffic(host, port string, srv *http.Server) (*trafficPort, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	p := &trafficPort{srv: srv, ln: ln, first: ln.Addr(), changed: make(chan struct{})}
	p.addr = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	return p, nil
}

// setDown takes the port down or brings it up; either is a no-op if it is
// so already. Bringing it up fails, and changes nothing, if the port cannot
// be listened on again (another process took it meanwhile).
func (p *trafficPort) setDown(down bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || down == (p.ln == nil) {
		return nil
	}
	if down {
		// Keep-alives off first: a connection that finishes an answer from
		// now on closes, and the idle ones close now.
		p.srv.SetKeepAlivesEnabled(false)
		p.ln.Close()
		p.ln = nil
	} else {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("listening on %s again: %w", p.addr, err)
		}
		p.ln = ln
		p.srv.SetKeepAlivesEnabled(true)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

// Accept waits for the next connection, and, while the port is down, for it
// to come up.
func (p *trafficPort) Accept() (net.Conn, error) {
	for {
		p.mu.Lock()
		ln, changed, closed := p.ln, p.changed, p.closed
		p.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-changed
			continue
		}
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		p.mu.Lock()
		replaced := p.ln != ln && !p.closed // setDown closed it: not an error
		p.mu.Unlock()
		if !replaced {
			return nil, err
		}
	}
}

// Close closes the port for good (http.Server.Shutdown calls it).
func (p *trafficPort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.changed)
	if p.ln != nil {
		return p.ln.Close()
	}
	return nil
}

// Addr is the address the port listens on, also while it is down.
func (p *trafficPort) Addr() net.Addr { return p.first }
