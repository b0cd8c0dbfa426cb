// Package store is the one place where Redis is touched. The seeder writes
// the rotation list through a Store; the dispatcher reads the list and its
// down set, and keeps the health checks' lease, through the same Store. The
// list stays a plain Redis list of URLs, so `redis-cli LRANGE servers 0 -1`
// always shows the truth.
//
// The jobs that keep state of their own have their own types over a Store:
//
//	Rotation  rotate.go    the shared round robin's steps (LMOVE), shared round trips
//	Inflight  inflight.go  one dispatcher's side of the in-flight counts
//
// and the rest are files of Store's: the list (store.go), the health
// checks' keys and lease (health.go), the permission checks (access.go),
// what Redis's errors mean (classify.go), and the keys beside the list
// (keys.go).
//
// A rotation step is the tutorial's RPOPLPUSH, spelled LMOVE today:
//
//	LMOVE servers servers RIGHT LEFT
//
// It takes the last entry, puts it back at the front and returns it, in one
// atomic command, so every caller, in any number of processes, gets its own
// step of one shared round robin. The next pick is therefore always the last
// entry that LRANGE shows.
//
// The dispatcher sends these steps in a small script that takes one LMOVE
// per waiting request, so that concurrent requests share a round trip
// (package batch), and counts each step in a tally hash that `seeder watch`
// shows. Every other key the package uses sits beside the list, in its hash
// slot (keys.go), so that it all works the same on a Redis Cluster.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
)

// Errors of the seeder's writes. What a pick can meet (an empty list,
// Redis unavailable, a refused command, ...) is named in package pick.
var (
	// ErrNoURLs: a write was asked to store an empty list.
	ErrNoURLs = errors.New("no URLs given")
	// ErrNotInList: Remove was asked for an entry the list does not hold.
	ErrNotInList = errors.New("not in the rotation list")
)

// Store is the rotation list at one Redis key, and the keys beside it.
// What needs state of its own has its own type over a Store: the rotation
// steps (Rotation) and the in-flight counts (Inflight).
type Store struct {
	rdb  redis.UniversalClient
	key  string
	keys keys // the keys beside the list (keys.go)
	log  *slog.Logger

	stepTimeout time.Duration                               // bound of one round trip (SetStepTimeout)
	denied      sync.Map                                    // refused command -> when it was last logged (logDenied)
	onDenied    atomic.Pointer[func(*pick.PermissionError)] // hears every refused command (OnDenied)
	noMulti     atomic.Pointer[refusal]                     // Redis refused MULTI to this user (txPipelined)
}

// NewStore returns a Store for the list at key. A nil log discards its
// messages.
func NewStore(rdb redis.UniversalClient, key string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{rdb: rdb, key: key, keys: keysOf(key), log: log, stepTimeout: DefaultStepTimeout}
}

// Key returns the Redis key of the list.
func (s *Store) Key() string { return s.key }

// StepTimeout is how long one round trip may take (SetStepTimeout).
func (s *Store) StepTimeout() time.Duration { return s.stepTimeout }

// SetStepTimeout sets how long one round trip may take (default
// DefaultStepTimeout). Set it before making a Rotation or an Inflight,
// which take it as they are made.
func (s *Store) SetStepTimeout(d time.Duration) {
	if d > 0 {
		s.stepTimeout = d
	}
}

// Entries returns the list as LRANGE key 0 -1 shows it. The next pick is the
// last entry.
func (s *Store) Entries(ctx context.Context) ([]string, error) {
	entries, err := s.rdb.LRange(ctx, s.key, 0, -1).Result()
	return entries, s.classifyOp(err, "LRANGE "+s.key)
}

// Read returns the list as LRANGE shows it and the entries marked down, as
// one consistent view (MULTI/EXEC: both keys share a hash slot). A down set
// of the wrong type reads as empty (see stepScript); a list of the wrong
// type fails with pick.ErrWrongType. Plain reads, not a script, so that they go
// on while Redis holds writes (CLIENT PAUSE WRITE).
func (s *Store) Read(ctx context.Context) (entries, down []string, err error) {
	var list *redis.StringSliceCmd
	var set *redis.StringSliceCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		list = p.LRange(ctx, s.key, 0, -1)
		set = p.SMembers(ctx, s.keys.down)
		return nil
	})
	if perr := s.deniedIn(cmds); perr != nil {
		return nil, nil, perr
	}
	if list != nil && list.Err() != nil {
		return nil, nil, s.classify(list.Err())
	}
	if err != nil && (set == nil || set.Err() == nil || !strings.HasPrefix(set.Err().Error(), "WRONGTYPE")) {
		return nil, nil, s.classify(err)
	}
	if set.Err() != nil {
		return list.Val(), nil, nil
	}
	return list.Val(), set.Val(), nil
}

// Tail returns the last n entries of the list as LRANGE shows them (the
// next picks, the very next last) and the list's length, in one
// transaction: what a view of the rotation needs, at a cost that does not
// grow with the list.
func (s *Store) Tail(ctx context.Context, n int) (entries []string, total int64, err error) {
	var size *redis.IntCmd
	var tail *redis.StringSliceCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		size = p.LLen(ctx, s.key)
		tail = p.LRange(ctx, s.key, -int64(n), -1)
		return nil
	})
	if err != nil {
		return nil, 0, s.classifyTx(cmds, err)
	}
	return tail.Val(), size.Val(), nil
}

// stringsOf converts a script's array reply of bulk strings.
func stringsOf(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Len returns the number of entries (0 when the key does not exist).
func (s *Store) Len(ctx context.Context) (int64, error) {
	n, err := s.rdb.LLen(ctx, s.key).Result()
	return n, s.classifyOp(err, "LLEN "+s.key)
}

// Replace makes the list exactly urls, in this order, in one MULTI/EXEC: a
// reader sees the old list or the new one, never a mix or an empty key. Every
// URL is validated first; if any fails, nothing is written. The tally of
// steps per entry starts again from zero, the quarantine (rotate.go) is
// emptied, and the list's version changes (version.go).
func (s *Store) Replace(ctx context.Context, urls []string) error {
	return s.ReplaceWithProbes(ctx, urls, nil)
}

// Add validates u and appends it to the list, where it becomes the next
// pick, and bumps the list's version in the same transaction. It returns
// the new length of the list.
func (s *Store) Add(ctx context.Context, u string) (int64, error) {
	if err := validateAll([]string{u}); err != nil {
		return 0, err
	}
	var n *redis.IntCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.RPush(ctx, s.key, u)
		s.bump(ctx, p)
		return nil
	})
	if err != nil {
		return 0, s.classifyTx(cmds, err)
	}
	return n.Val(), nil
}

// Remove deletes every occurrence of entry, bumping the list's version in
// the same transaction, and returns how many there were.
// entry is not validated, so that an invalid entry can be cleaned out; an
// entry that is not in the list gives ErrNotInList.
func (s *Store) Remove(ctx context.Context, entry string) (int64, error) {
	if entry == "" {
		return 0, ErrNoURLs
	}
	var rem *redis.IntCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		rem = p.LRem(ctx, s.key, 0, entry)
		s.bump(ctx, p)
		return nil
	})
	if err != nil {
		return 0, s.classifyTx(cmds, err)
	}
	n := rem.Val()
	if n == 0 {
		return 0, fmt.Errorf("%q: %w %q", entry, ErrNotInList, s.key)
	}
	return n, nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.classifyOp(s.rdb.Ping(ctx).Err(), "PING")
}

// refusal is an error Redis answered, and when.
type refusal struct {
	err error
	at  time.Time
}

// txPipelined is the client's TxPipelined, except that once Redis has
// refused MULTI to this user it sends nothing for deniedLogEvery and
// returns that refusal again. Sent anyway, the commands queued behind the
// refused MULTI would run outside any transaction, and go-redis would drop
// the connection for the replies it did not read ("Conn has unread data"),
// every time.
func (s *Store) txPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	if r := s.noMulti.Load(); r != nil && time.Since(r.at) < deniedLogEvery {
		return nil, r.err
	}
	cmds, err := s.rdb.TxPipelined(ctx, fn)
	for _, c := range cmds {
		if e := c.Err(); e != nil && isPermission(e.Error()) && strings.Contains(e.Error(), "'multi'") {
			s.noMulti.Store(&refusal{e, time.Now()})
			break
		}
	}
	return cmds, err
}

func validateAll(urls []string) error {
	for _, u := range urls {
		if _, err := backend.Parse(u); err != nil {
			return err
		}
	}
	return nil
}

func toArgs(ss []string) []any {
	args := make([]any, len(ss))
	for i, s := range ss {
		args[i] = s
	}
	return args
}
