package store

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
)

// Self-registration and the reconciler (package members runs them).
//
// A backend started with REGISTER=1 writes its own key,
// "{servers}:member:URL" (URL: its ADVERTISE_URL), with a TTL of three
// heartbeats, and adds URL to the index "{servers}:members"; it does both
// again every heartbeat (Register). It never writes the list: one writer
// does, the dispatcher that holds the health checks' lease, which runs
// reconcileScript twice a second (Reconcile). A registration whose key is
// there is alive; one whose key has expired (a crash) or was deleted (a
// clean stop: Deregister) is gone, and the reconciler finds it gone by
// looking, not by hearing of it (no keyspace notification is involved).
//
// The reconciler adds a live registration that the list lacks to the list,
// as the next pick, and notes it in "{servers}:joined" (URL -> when, in
// Redis's clock). It removes from the list only entries it noted there, one
// occurrence each: an entry seeded or added by hand is never removed by
// registration, even if a backend registers the same URL and goes away.
//
// The same script keeps "{servers}:since", when each entry of the list
// last became eligible (in the list, not down, not ejected), in Redis's
// clock: slow start ramps an entry's share from that moment (package pool).
// An entry that is down or ejected has no time there; the first time the
// script sees the table empty (a new list) it gives every entry "0", long
// ago, so that a fresh stack does not ramp what it starts with.

// MemberKey returns the Redis key of url's registration:
// "{servers}:member:http://backend4:5000". A backend's ACL user may be
// allowed to write this key alone (docs/security.md).
func (s *Store) MemberKey(url string) string { return s.keys.member + url }

// MembersKey returns the Redis key of the set of URLs that registered:
// "{servers}:members".
func (s *Store) MembersKey() string { return s.keys.members }

// Register writes url's registration for ttl and puts url in the index, in
// one MULTI/EXEC. fresh is true when the index did not hold url: the first
// registration, or the first after Redis lost it (a restart without
// persistence, FLUSHALL, a failover) or after the reconciler dropped an
// expired one. The value of the key is ttl in milliseconds, so that a
// reader tells when it was last renewed from its remaining TTL.
func (s *Store) Register(ctx context.Context, url string, ttl time.Duration) (fresh bool, err error) {
	if _, err := backend.Parse(url); err != nil {
		return false, err
	}
	var added *redis.IntCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.MemberKey(url), ttl.Milliseconds(), ttl)
		added = p.SAdd(ctx, s.keys.members, url)
		return nil
	})
	if err != nil {
		return false, s.classifyTx(cmds, err)
	}
	return added.Val() == 1, nil
}

// Deregister deletes url's registration: the reconciler takes url out of
// the list at its next round (within ReconcileEvery), if it put it there.
func (s *Store) Deregister(ctx context.Context, url string) error {
	return s.classifyOp(s.rdb.Del(ctx, s.MemberKey(url)).Err(), "DEL "+s.MemberKey(url))
}

// Joined reports whether the list holds url because the reconciler put it
// there: then the reconciler takes that entry out once url's registration
// is gone, and a leaving backend waits for it. An entry seeded or added by
// hand is not joined, and stays.
func (s *Store) Joined(ctx context.Context, url string) (bool, error) {
	ok, err := s.rdb.HExists(ctx, s.keys.joined, url).Result()
	return ok, s.classifyOp(err, "HEXISTS "+s.keys.joined)
}

// InList reports whether the list holds entry.
func (s *Store) InList(ctx context.Context, entry string) (bool, error) {
	entries, err := s.Entries(ctx)
	if err != nil {
		return false, err
	}
	return slices.Contains(entries, entry), nil
}

// reconcileScript: KEYS[1] the lease, [2] the list, [3] the index of
// registrations, [4] the joined hash, [5] the since hash, [6] the down set,
// [7] the ejected sorted set, [8] the ejection counts, [9] the list's
// version (version.go), which it bumps when it changed the list or the
// since hash: the pools read them again. ARGV[1] the reconciler's id in the
// lease, [2] the prefix of registration keys. If ARGV[1] does not hold the
// lease it returns {0} and writes nothing; else {1, added, removed}.
//
// Registration keys are not in KEYS: their names come from the index. They
// share the list's hash slot (sibling), so on a Cluster they are on the
// node that runs the script.
var reconcileScript = redis.NewScript(luaCall + bumpLua + `
if try("GET", KEYS[1]) ~= ARGV[1] then return {0} end
local maxlen = ` + strconv.Itoa(backend.MaxLen) + `
local t = call("TIME")
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local list = try("LRANGE", KEYS[2], 0, -1)
if not list then return {1, {}, {}} end
local inList = {}
for _, e in ipairs(list) do inList[e] = (inList[e] or 0) + 1 end
local joined = {}
local j = try("HGETALL", KEYS[4]) or {}
for i = 1, #j, 2 do joined[j[i]] = true end
local cands = {}
for _, u in ipairs(try("SMEMBERS", KEYS[3]) or {}) do cands[u] = true end
for u in pairs(joined) do cands[u] = true end
local since = {}
local sv = try("HGETALL", KEYS[5]) or {}
for i = 1, #sv, 2 do since[sv[i]] = sv[i + 1] end
local fresh = #sv == 0
local added, removed, changed = {}, {}, false
for u in pairs(cands) do
  local ttl = -2
  if #u <= maxlen then ttl = call("PTTL", ARGV[2] .. u) end
  if ttl > 0 or ttl == -1 then
    if not inList[u] then
      call("RPUSH", KEYS[2], u)
      try("HSET", KEYS[4], u, now)
      since[u] = now
      try("HSET", KEYS[5], u, now)
      inList[u] = 1
      added[#added + 1] = u
    end
  else
    if joined[u] then
      if inList[u] and call("LREM", KEYS[2], 1, u) > 0 then
        removed[#removed + 1] = u
        inList[u] = inList[u] > 1 and inList[u] - 1 or nil
      end
      try("HDEL", KEYS[4], u)
    end
    call("SREM", KEYS[3], u)
  end
end
local out = {}
for _, e in ipairs(try("SMEMBERS", KEYS[6]) or {}) do out[e] = true end
try("ZREMRANGEBYSCORE", KEYS[7], "-inf", now)
for _, e in ipairs(try("ZRANGE", KEYS[7], 0, -1) or {}) do out[e] = true end
-- An entry that left the list loses its ejection and its count, also one
-- that had no time in the since hash because it was ejected or down.
local ej = try("HGETALL", KEYS[8]) or {}
for i = 1, #ej, 2 do
  if not inList[ej[i]] then
    try("ZREM", KEYS[7], ej[i])
    try("HDEL", KEYS[8], ej[i])
    changed = true
  end
end
for e, v in pairs(since) do
  if not inList[e] then
    try("HDEL", KEYS[5], e)
    try("ZREM", KEYS[7], e)
    try("HDEL", KEYS[8], e)
    changed = true
  elseif out[e] then
    try("HDEL", KEYS[5], e)
    changed = true
  end
end
for e in pairs(inList) do
  if not out[e] and not since[e] then
    if fresh then try("HSET", KEYS[5], e, "0") else try("HSET", KEYS[5], e, now) end
    changed = true
  end
end
if changed or #added > 0 or #removed > 0 then bump(KEYS[9]) end
return {1, added, removed}
`)

// ReconcileEvery is how often the lease holder reconciles: a clean stop
// leaves the list within this, a crash within the registration's TTL and
// this.
const ReconcileEvery = 500 * time.Millisecond

// Reconciled is what one round of Reconcile did.
type Reconciled struct {
	Held    bool     // id held the lease: the round ran
	Added   []string // live registrations put in the list
	Removed []string // gone registrations taken out of it
}

// Reconcile brings the list in step with the registrations, and the slow
// start table with the list, if id holds the health checks' lease; else it
// writes nothing (Held false). So two dispatchers never both reconcile.
func (s *Store) Reconcile(ctx context.Context, id string) (Reconciled, error) {
	k := s.keys
	res, err := reconcileScript.Run(ctx, s.rdb, []string{k.lease, s.key, k.members, k.joined, k.since, k.down, k.ejected, k.ejection, k.version},
		id, k.member).Slice()
	if err != nil {
		return Reconciled{}, s.classify(err)
	}
	if len(res) != 3 {
		return Reconciled{}, nil
	}
	r := Reconciled{Held: true, Added: stringsOf(res[1]), Removed: stringsOf(res[2])}
	slices.Sort(r.Added)
	slices.Sort(r.Removed)
	return r, nil
}

// Member is one registration, as Members reads it.
type Member struct {
	URL string
	// Alive: its key is there. LastHeard is how long ago it was last
	// renewed (by Redis's clock), when Alive.
	Alive     bool
	LastHeard time.Duration
	// Joined: the reconciler put it in the list (and will take it out).
	Joined bool
}

// Members reads the registrations, sorted by URL: every URL of the index
// and of the joined hash, and whether each is alive.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	var index *redis.StringSliceCmd
	var joined *redis.MapStringStringCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		index = p.SMembers(ctx, s.keys.members)
		joined = p.HGetAll(ctx, s.keys.joined)
		return nil
	})
	if err != nil {
		return nil, s.classifyTx(cmds, err)
	}
	urls := slices.Clone(index.Val())
	for u := range joined.Val() {
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	slices.Sort(urls)
	if len(urls) == 0 {
		return nil, nil
	}
	ttls := make([]*redis.DurationCmd, len(urls))
	vals := make([]*redis.StringCmd, len(urls))
	cmds, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range urls {
			ttls[i] = p.PTTL(ctx, s.MemberKey(u))
			vals[i] = p.Get(ctx, s.MemberKey(u))
		}
		return nil
	})
	if perr := s.deniedIn(cmds); perr != nil {
		return nil, perr
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
			return nil, s.classify(e)
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.classify(err)
	}
	out := make([]Member, 0, len(urls))
	for i, u := range urls {
		m := Member{URL: u}
		_, m.Joined = joined.Val()[u]
		if ttl := ttls[i].Val(); ttls[i].Err() == nil && (ttl > 0 || ttl == -1) {
			m.Alive = true
			if full, err := strconv.ParseInt(vals[i].Val(), 10, 64); err == nil && ttl > 0 {
				m.LastHeard = max(0, time.Duration(full)*time.Millisecond-ttl)
			}
		}
		out = append(out, m)
	}
	return out, nil
}
