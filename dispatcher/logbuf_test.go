package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lines written from many goroutines all arrive, each whole, each
// goroutine's in its order, with nothing added; those still waiting when
// Close is called arrive by its return; a write after Close goes straight
// out.
func TestLogBufferKeepsEveryLineInOrder(t *testing.T) {
	out := &syncBuffer{}
	l := newLogBuffer(out)
	const writers, lines = 8, 2000 // more than logBufferMax in all: some writes find the buffer full
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(l, "writer=%d line=%d %s\n", w, i, strings.Repeat("x", 20+i%40))
			}
		})
	}
	wg.Wait()
	l.Close()
	fmt.Fprintf(l, "after close\n")
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines+1 {
		t.Fatalf("got %d lines, want %d", len(got), writers*lines+1)
	}
	if last := got[len(got)-1]; last != "after close" {
		t.Errorf("last line: got %q, want %q", last, "after close")
	}
	next := make([]int, writers)
	for _, line := range got[:len(got)-1] {
		var w, i int
		var pad string
		if _, err := fmt.Sscanf(line, "writer=%d line=%d %s", &w, &i, &pad); err != nil || w < 0 || w >= writers {
			t.Fatalf("line %q: not one that was written (%v)", line, err)
		}
		if i != next[w] || len(pad) != 20+i%40 {
			t.Fatalf("line %q: want writer %d's line %d, whole", line, w, next[w])
		}
		next[w]++
	}
}

// A line reaches the output without Close, by the flusher alone.
func TestLogBufferFlushesWithoutClose(t *testing.T) {
	out := &syncBuffer{}
	l := newLogBuffer(out)
	defer l.Close()
	fmt.Fprintf(l, "level=INFO msg=request\n")
	for deadline := time.Now().Add(10 * time.Second); out.String() == ""; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the line was not written within 10 s")
		}
	}
	if got := out.String(); got != "level=INFO msg=request\n" {
		t.Errorf("got %q, want the line", got)
	}
}
