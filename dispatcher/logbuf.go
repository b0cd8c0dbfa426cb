package main

import (
	"io"
	"sync"
	"time"
)

// logBuffer is the dispatcher's log output: lines are collected in memory
// and written out in one write every logFlushEvery, by a goroutine of its
// own, rather than one write per line on the request's goroutine. At the
// default LOG_LEVEL=info every request writes a line (observeRequests), and
// a write system call per request was the larger part of what that line
// cost (docs/performance.md). The lines are the same, in the same order;
// they reach the output at most about logFlushEvery later, or at once when
// logBufferMax bytes are waiting (a writer then waits for the output, so a
// slow output slows the requests rather than filling memory). Close writes
// what is left; run calls it on the way out.
type logBuffer struct {
	out io.Writer

	mu     sync.Mutex
	buf    []byte // lines waiting
	spare  []byte // the other buffer: the one being written out, then reused
	closed bool
	wake   chan struct{} // a line arrived in an empty buffer
	done   chan struct{} // closed by Close: the flusher writes what is left and stops
	exited chan struct{} // closed when the flusher has stopped

	// writing serializes writes to out, so that lines leave in order even
	// when a full buffer is written by a writer while the flusher writes
	// the batch before it. Taken after mu, never before.
	writing sync.Mutex
}

const (
	logFlushEvery = 50 * time.Millisecond
	logBufferMax  = 256 << 10
)

func newLogBuffer(out io.Writer) *logBuffer {
	l := &logBuffer{out: out, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go l.flusher()
	return l
}

// Write keeps a copy of p for the next flush. slog's handlers call it once
// per record, with the whole line.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed || len(l.buf)+len(p) > logBufferMax {
		// Closed, or too much waiting: write it all now, in order.
		pending := l.buf
		l.buf = nil // pending is written outside mu; later lines need another array
		l.writing.Lock()
		l.mu.Unlock()
		defer l.writing.Unlock()
		if len(pending) > 0 {
			l.out.Write(pending)
		}
		return l.out.Write(p)
	}
	wasEmpty := len(l.buf) == 0
	l.buf = append(l.buf, p...)
	l.mu.Unlock()
	if wasEmpty {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// flusher writes the waiting lines out, logFlushEvery after the first of
// them arrived; it sleeps while nothing is logged.
func (l *logBuffer) flusher() {
	defer close(l.exited)
	t := time.NewTimer(logFlushEvery)
	t.Stop()
	for {
		select {
		case <-l.wake:
			t.Reset(logFlushEvery)
			select {
			case <-t.C:
			case <-l.done:
				l.flush()
				return
			}
			l.flush()
		case <-l.done:
			l.flush()
			return
		}
	}
}

// flush writes the waiting lines out in one write.
func (l *logBuffer) flush() {
	l.mu.Lock()
	if len(l.buf) == 0 {
		l.mu.Unlock()
		return
	}
	out := l.buf
	l.buf = l.spare[:0]
	l.writing.Lock() // before a writer that finds the buffer full can write after out
	l.mu.Unlock()
	l.out.Write(out)
	l.writing.Unlock()
	l.mu.Lock()
	l.spare = out[:0]
	l.mu.Unlock()
}

// Close writes what is waiting and makes every later Write go straight to
// the output.
func (l *logBuffer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	<-l.exited
	return nil
}
