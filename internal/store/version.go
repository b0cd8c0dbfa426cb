package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The list's version: "{servers}:version", a counter that every write to
// the list's entries or to its down set increments, in the same
// transaction or script as the write. A process that keeps a copy of the
// list (package pool) asks for the version and the list's length every few
// tens of milliseconds, two commands of a few bytes, and reads the whole
// list only when one of them changed: so an idle dispatcher no longer
// re-reads a long list every second, and a change still reaches it within
// one check.
//
// The rotation's steps do not count as changes: they move entries, they do
// not add or remove any, and a copy of the list is a set of candidates, not
// a rotation order (the shared rotation lives in Redis). Quarantining an
// entry (rotate.go) does count.
//
// When the key is lost (FLUSHALL, or a Redis that restarts without its
// data), the next write starts the counter again from a random value
// (SET NX, then INCR), so a reader never takes a new list for the one it
// holds because both counters happen to stand at 1.
//
// Every writer of the list goes through this package and calls bump (or
// bumpLua inside a script). A hand-made change (redis-cli RPUSH) does not
// bump it; the length catches additions and removals, and a reader re-reads
// the whole list now and then anyway (pool.FullEvery).

// bump queues the version's increment on p, a transaction that writes the
// list or its down set.
func (s *Store) bump(ctx context.Context, p redis.Pipeliner) {
	p.SetArgs(ctx, s.keys.version, versionBase(), redis.SetArgs{Mode: "NX"})
	p.Incr(ctx, s.keys.version)
}

// written is the error of a transaction that bumps the version: its first
// command's error other than redis.Nil, which SET NX answers when the
// version exists, as it usually does.
func written(cmds []redis.Cmder, err error) error {
	if err != redis.Nil {
		return err
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && e != redis.Nil {
			return e
		}
	}
	return nil
}

// bumpLua is bump for a script, after luaCall: bump(key) increments the
// version at key, starting it from the server's clock in microseconds if
// it is missing.
const bumpLua = `
local function bump(key)
  local t = call("TIME")
  call("SET", key, t[1] .. string.format("%06d", tonumber(t[2])), "NX")
  call("INCR", key)
end
`

// versionBase is where a lost version starts again: a random number far
// from the small counts a fresh one reaches.
func versionBase() int64 {
	var b [8]byte
	rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>2) | 1<<40
}

// Version returns a token that changes whenever the list's entries or its
// down set change: the version counter and the list's length, in one round
// trip of two O(1) commands. A list of the wrong type gives a token of its
// own, not an error: Read says what is wrong.
func (s *Store) Version(ctx context.Context) (string, error) {
	var ver *redis.StringCmd
	var n *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		ver = p.Get(ctx, s.keys.version)
		n = p.LLen(ctx, s.key)
		return nil
	})
	if v := ver.Err(); v != nil && v != redis.Nil && !strings.HasPrefix(v.Error(), "WRONGTYPE") {
		return "", s.classifyOp(v, "GET "+s.keys.version)
	}
	if e := n.Err(); e != nil {
		if strings.HasPrefix(e.Error(), "WRONGTYPE") {
			return ver.Val() + "/wrongtype", nil
		}
		return "", s.classifyOp(e, "LLEN "+s.key)
	}
	if err != nil && err != redis.Nil {
		return "", s.classify(err)
	}
	return ver.Val() + "/" + strconv.FormatInt(n.Val(), 10), nil
}
