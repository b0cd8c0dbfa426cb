package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The list's version: "{servers}:version", a token that every write to
// the list's entries or to its down set replaces with a new one, in the
// same transaction or script as the write. A process that keeps a copy of
// the list (package pool) asks for the version and the list's length every
// few tens of milliseconds, two commands of a few bytes, and reads the
// whole list only when one of them changed: so an idle dispatcher no longer
// re-reads a long list every second, and a change still reaches it within
// one check.
//
// The rotation's steps do not count as changes: they move entries, they do
// not add or remove any, and a copy of the list is a set of candidates, not
// a rotation order (the shared rotation lives in Redis). Quarantining an
// entry (rotate.go) does count.
//
// A reader compares versions for equality only, so a new token is all a
// write needs: 64 random bits from a program, the server's clock to the
// microsecond from a script (one bump per script call). A plain SET, which
// cannot fail whatever the key held, and cannot come back to an old value
// after FLUSHALL, as a counter restarting from 1 would.
//
// Every writer of the list goes through this package and calls bump (or
// bumpLua inside a script). A hand-made change (redis-cli RPUSH) does not
// bump it; the length catches additions and removals, and a reader re-reads
// the whole list now and then anyway (pool.FullEvery).

// bump queues a new version on p, a transaction that writes the list or
// its down set.
func (s *Store) bump(ctx context.Context, p redis.Pipeliner) {
	var b [8]byte
	rand.Read(b[:])
	p.Set(ctx, s.keys.version, hex.EncodeToString(b[:]), 0)
}

// bumpLua is bump for a script, after luaCall: bump(key) sets a new version
// at key, from the server's clock.
const bumpLua = `
local function bump(key)
  local t = call("TIME")
  call("SET", key, "t" .. t[1] .. "." .. t[2])
end
`

// Version returns a token that changes whenever the list's entries or its
// down set change: the version and the list's length, in one round trip
// of two O(1) commands. A list of the wrong type gives a token of its own,
// not an error: Read says what is wrong.
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
