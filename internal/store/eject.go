package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/pick"
)

// Outlier ejection's state, shared by every dispatcher on the list: the
// sorted set "{servers}:ejected" holds the entries ejected now, each
// scored with the time (Redis's clock, in milliseconds) its ejection ends;
// the hash "{servers}:ejections" holds, per entry, how many times it has
// been ejected and when its last ejection ended ("TIMES:UNTIL"), for the
// backoff. A dispatcher that counts EJECT_AFTER failures in a row calls
// Eject; the rotation step (stepScript) and every pool skip the entries of
// the sorted set whose time has not come.

// EjectPolicy is how long an ejection lasts, and how many there may be.
type EjectPolicy struct {
	// Base is the first ejection's length (EJECT_TIME); the Nth lasts
	// N×Base, up to Max.
	Base time.Duration
	// Max bounds one ejection's length; zero means MaxEjectTime.
	Max time.Duration
	// MaxPercent bounds the share of the list's distinct entries ejected
	// at once (EJECT_MAX_PERCENT): an ejection that would pass it is
	// refused.
	MaxPercent int
}

// MaxEjectTime bounds one ejection, as Envoy's max_ejection_time does by
// default. An entry not ejected for this long starts its count anew.
const MaxEjectTime = 5 * time.Minute

// Ejection is what Eject did.
type Ejection struct {
	Ejected bool // this call ejected the entry
	Already bool // it was ejected already, by this or another dispatcher
	Capped  bool // refused: EjectPolicy.MaxPercent of the list is ejected already
	NotIn   bool // refused: the list does not hold the entry (any more)
	// Times is how many times the entry has been ejected, this one
	// included (Ejected); For is how long this ejection lasts, Until when
	// it ends, in Redis's clock (Ejected or Already).
	Times int
	For   time.Duration
	Until time.Time
	// EjectedNow and Pool are the ejected entries and the list's distinct
	// entries, as the cap counted them (Capped).
	EjectedNow, Pool int
}

// ejectScript: KEYS[1] the ejected set, [2] the ejection counts, [3] the
// list, [4] the list's version, which an ejection bumps (version.go): it
// changes what every pool may pick. ARGV[1] the entry, [2] the base length in ms, [3] the longest in
// ms, [4] the most that may be ejected, in percent of the list's distinct
// entries. It returns {"ejected", times, ms, until}, {"already", until},
// {"capped", ejected, distinct} or {"notin"}. One script, so that two
// dispatchers that count their fifth failure at once eject once, and the
// cap holds whatever their number.
var ejectScript = redis.NewScript(luaCall + bumpLua + `
local t = call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
try("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
local cur = try("ZSCORE", KEYS[1], ARGV[1])
if cur then return {"already", tostring(cur)} end
local inList, n = {}, 0
for _, e in ipairs(try("LRANGE", KEYS[3], 0, -1) or {}) do
  if not inList[e] then inList[e] = true; n = n + 1 end
end
if not inList[ARGV[1]] then return {"notin"} end
local ejected = 0
for _, e in ipairs(try("ZRANGE", KEYS[1], 0, -1) or {}) do
  if inList[e] then ejected = ejected + 1 end
end
if (ejected + 1) * 100 > tonumber(ARGV[4]) * n then
  return {"capped", tostring(ejected), tostring(n)}
end
local base, longest = tonumber(ARGV[2]), tonumber(ARGV[3])
local times = 0
local prev = try("HGET", KEYS[2], ARGV[1])
if prev then
  local k, last = string.match(prev, "^(%d+):(%d+)$")
  if k and now - tonumber(last) < longest then times = tonumber(k) end
end
times = times + 1
local ms = math.min(base * times, longest)
local untilMs = now + ms
call("ZADD", KEYS[1], untilMs, ARGV[1])
try("HSET", KEYS[2], ARGV[1], times .. ":" .. untilMs)
bump(KEYS[4])
return {"ejected", tostring(times), tostring(ms), tostring(untilMs)}
`)

// Eject ejects entry for every dispatcher on the list, as p says: for
// p.Base times the number of times it has been ejected (counting anew
// after MaxEjectTime without one), up to p.Max, unless that would eject
// more than p.MaxPercent of the list's distinct entries, or the entry is
// ejected already.
func (s *Store) Eject(ctx context.Context, entry string, p EjectPolicy) (Ejection, error) {
	if p.Max <= 0 {
		p.Max = MaxEjectTime
	}
	res, err := ejectScript.Run(ctx, s.rdb, []string{s.keys.ejected, s.keys.ejection, s.key, s.keys.version},
		entry, p.Base.Milliseconds(), p.Max.Milliseconds(), p.MaxPercent).StringSlice()
	if err != nil {
		return Ejection{}, s.classify(err)
	}
	num := func(i int) int64 {
		if i >= len(res) {
			return 0
		}
		n, _ := strconv.ParseInt(res[i], 10, 64)
		return n
	}
	var e Ejection
	switch {
	case len(res) == 0:
		return e, fmt.Errorf("%w: the eject script answered nothing", pick.ErrUnavailable)
	case res[0] == "ejected":
		e.Ejected, e.Times, e.For, e.Until = true, int(num(1)), time.Duration(num(2))*time.Millisecond, time.UnixMilli(num(3))
	case res[0] == "already":
		e.Already, e.Until = true, time.UnixMilli(num(1))
	case res[0] == "capped":
		e.Capped, e.EjectedNow, e.Pool = true, int(num(1)), int(num(2))
	case res[0] == "notin":
		e.NotIn = true
	}
	return e, nil
}

// EjectedEntry is one entry's ejection, as Ejections reads it.
type EjectedEntry struct {
	Entry string
	Until time.Time // in Redis's clock; zero when it is not ejected now
	Times int       // how many times it has been ejected
}

// Ejections reads the ejection state of every entry that has one, and
// Redis's clock, in one MULTI: what `seeder list` shows.
func (s *Store) Ejections(ctx context.Context) (now time.Time, out map[string]EjectedEntry, err error) {
	now, ejected, counts, err := s.readEjected(ctx, s.keys.ejection)
	if err != nil {
		return now, nil, err
	}
	out = map[string]EjectedEntry{}
	for e, v := range counts {
		k, _, _ := strings.Cut(v, ":")
		n, _ := strconv.Atoi(k)
		out[e] = EjectedEntry{Entry: e, Times: n}
	}
	for e, until := range ejected {
		x := out[e]
		x.Entry, x.Until = e, until
		out[e] = x
	}
	return now, out, nil
}

// ReadExtras reads what the pool keeps beside the list and its down set,
// in one MULTI: Redis's clock, the entries ejected now with the end of
// their ejection, and when each entry last became eligible (slow start's
// table, members.go). A key of the wrong type reads as empty.
func (s *Store) ReadExtras(ctx context.Context) (now time.Time, ejected, since map[string]time.Time, err error) {
	now, ejected, raw, err := s.readEjected(ctx, s.keys.since)
	if err != nil {
		return now, nil, nil, err
	}
	since = map[string]time.Time{}
	for e, v := range raw {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			since[e] = time.UnixMilli(ms)
		}
	}
	return now, ejected, since, nil
}

// readEjected reads, in one MULTI, Redis's clock, the entries ejected at
// that time with the end of their ejection, and the hash at key. Keys of
// the wrong type read as empty.
func (s *Store) readEjected(ctx context.Context, key string) (now time.Time, ejected map[string]time.Time, hash map[string]string, err error) {
	var tm *redis.TimeCmd
	var set *redis.ZSliceCmd
	var h *redis.MapStringStringCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		set = p.ZRangeWithScores(ctx, s.keys.ejected, 0, -1)
		h = p.HGetAll(ctx, key)
		return nil
	})
	if err != nil && !wrongTypeOnly(cmds) {
		return now, nil, nil, s.classifyTx(cmds, err)
	}
	now, ejected = tm.Val(), map[string]time.Time{}
	for _, z := range set.Val() {
		if e, ok := z.Member.(string); ok && int64(z.Score) > now.UnixMilli() {
			ejected[e] = time.UnixMilli(int64(z.Score))
		}
	}
	return now, ejected, h.Val(), nil
}

// wrongTypeOnly reports a transaction whose only failures are keys of the
// wrong type (put there by hand), which read as empty.
func wrongTypeOnly(cmds []redis.Cmder) bool {
	failed := false
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			if !strings.HasPrefix(err.Error(), "WRONGTYPE") {
				return false
			}
			failed = true
		}
	}
	return failed
}
