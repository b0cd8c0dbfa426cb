package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spreadlb/spread/internal/backend"

	"github.com/redis/go-redis/v9"
)

// The health checks' state in Redis (package health does the probing):
// the down set ("{servers}:down") that the rotation step reads, the lease
// ("{servers}:lease") that names the one dispatcher probing at a time, the
// probe hash ("{servers}:probe") and the failures proxies report
// ("{servers}:reports").

// claimScript takes or renews the lease KEYS[1] for ARGV[1] for ARGV[2]
// milliseconds, as SET NX PX would for a newcomer, and if this checker
// holds it returns {1, list KEYS[2], down set KEYS[3], probe hash KEYS[4]};
// else {0}. Keys of the wrong type read as empty.
// A lease key of the wrong type (put there by hand) counts as free: SET
// replaces it. Any other error, a denied command above all, fails the
// script (luaCall).
var claimScript = redis.NewScript(luaCall + `
local holder = try("GET", KEYS[1])
if holder and holder ~= ARGV[1] then return {0} end
call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return {1, try("LRANGE", KEYS[2], 0, -1) or {}, try("SMEMBERS", KEYS[3]) or {}, try("HGETALL", KEYS[4]) or {}}
`)

// publishScript makes the down set KEYS[2] exactly ARGV[3...] and renews
// the lease KEYS[1] for ARGV[2] ms, if ARGV[1] still holds it; it returns 1
// then, else 0 and writes nothing. The set is rewritten, and the list's
// version KEYS[3] bumped, only when it changes: a round of checks that
// finds what the last one found changes nothing a reader of the list
// would have to read again.
var publishScript = redis.NewScript(luaCall + bumpLua + `
if try("GET", KEYS[1]) ~= ARGV[1] then return 0 end
call("PEXPIRE", KEYS[1], ARGV[2])
local want, n = {}, 0
for i = 3, #ARGV do
  if not want[ARGV[i]] then want[ARGV[i]], n = true, n + 1 end
end
local same = try("SCARD", KEYS[2]) == n
if same then
  for e in pairs(want) do
    if call("SISMEMBER", KEYS[2], e) == 0 then same = false break end
  end
end
if same then return 1 end
call("DEL", KEYS[2])
for i = 3, #ARGV, 1000 do
  call("SADD", KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
bump(KEYS[3])
return 1
`)

// releaseScript deletes the lease KEYS[1] if ARGV[1] holds it.
var releaseScript = redis.NewScript(luaCall + `
if try("GET", KEYS[1]) == ARGV[1] then return call("DEL", KEYS[1]) end
return 0
`)

// LeaseView is what the lease holder reads at the start of a round, in the
// same script that renews its lease: the list, the down set and the probe
// hash (origin -> probe origin).
type LeaseView struct {
	Entries []string
	Down    []string
	Probes  map[string]string
}

// ClaimLease takes the lease for id for ttl, or renews it if id holds it,
// as SET NX PX would for a newcomer. held is false, and the view empty, when
// another checker holds it.
func (s *Store) ClaimLease(ctx context.Context, id string, ttl time.Duration) (held bool, v LeaseView, err error) {
	res, err := claimScript.Run(ctx, s.rdb, []string{s.keys.lease, s.key, s.keys.down, s.keys.probes}, id, ttl.Milliseconds()).Slice()
	if err != nil {
		return false, v, s.classify(err)
	}
	if len(res) != 4 {
		return false, v, nil
	}
	v = LeaseView{Entries: stringsOf(res[1]), Down: stringsOf(res[2]), Probes: map[string]string{}}
	for kv := stringsOf(res[3]); len(kv) >= 2; kv = kv[2:] {
		v.Probes[kv[0]] = kv[1]
	}
	return true, v, nil
}

// PublishDown makes the down set exactly down and renews the lease for ttl,
// if id still holds it; held is false, and nothing is written, if not.
func (s *Store) PublishDown(ctx context.Context, id string, ttl time.Duration, down []string) (held bool, err error) {
	args := append([]any{id, ttl.Milliseconds()}, toArgs(down)...)
	n, err := publishScript.Run(ctx, s.rdb, []string{s.keys.lease, s.keys.down, s.keys.version}, args...).Int()
	if err != nil {
		return false, s.classify(err)
	}
	return n == 1, nil
}

// ReleaseLease gives the lease up if id holds it.
func (s *Store) ReleaseLease(ctx context.Context, id string) error {
	return s.classify(releaseScript.Run(ctx, s.rdb, []string{s.keys.lease}, id).Err())
}

// TakeReports reads and clears the failures reported since the last call
// (ReportFailure), in one MULTI: origin -> how many.
func (s *Store) TakeReports(ctx context.Context) (map[string]string, error) {
	var all *redis.MapStringStringCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.keys.reports)
		p.Del(ctx, s.keys.reports)
		return nil
	})
	if err != nil {
		return nil, s.classifyTx(cmds, err)
	}
	return all.Val(), nil
}

// ReportFailure tells the health checks that connecting to entry's origin
// failed (a proxying dispatcher calls it): the lease holder counts it as one
// failed check in its next round. An entry that does not parse is ignored.
func (s *Store) ReportFailure(ctx context.Context, entry string) error {
	u, err := backend.Parse(entry)
	if err != nil {
		return nil
	}
	return s.classifyOp(s.rdb.HIncrBy(ctx, s.keys.reports, backend.Origin(u), 1).Err(), "HINCRBY "+s.keys.reports)
}

// Down returns the entries marked down, sorted.
func (s *Store) Down(ctx context.Context) ([]string, error) {
	down, err := s.rdb.SMembers(ctx, s.keys.down).Result()
	if err != nil {
		return nil, s.classifyOp(err, "SMEMBERS "+s.keys.down)
	}
	slices.Sort(down)
	return down, nil
}

// Probes returns the probe hash: origin -> the origin probed instead.
func (s *Store) Probes(ctx context.Context) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.probes).Result()
	return m, s.classifyOp(err, "HGETALL "+s.keys.probes)
}

// SetProbe makes the health checks probe probe instead of origin (both
// origins, validated).
func (s *Store) SetProbe(ctx context.Context, origin, probe string) error {
	o, p, err := parseProbe(origin, probe)
	if err != nil {
		return err
	}
	return s.classifyOp(s.rdb.HSet(ctx, s.keys.probes, o, p).Err(), "HSET "+s.keys.probes)
}

// ErrNoProbe: RemoveProbe was asked for an origin that has no probe address.
// errors.Is also matches it to ErrNotInList, which RemoveProbe returned
// before it had a sentinel of its own, so that callers testing for that keep
// working; its message says what it is.
var ErrNoProbe error = noProbe{}

type noProbe struct{}

func (noProbe) Error() string        { return "no probe address set" }
func (noProbe) Is(target error) bool { return target == ErrNotInList }

// RemoveProbe removes origin's probe address: it is probed at its own
// address again. An origin without one gives ErrNoProbe.
func (s *Store) RemoveProbe(ctx context.Context, origin string) error {
	o, err := backend.ParseOrigin(origin)
	if err != nil {
		o = origin // let a hand-made, invalid field be removed too
	}
	n, err := s.rdb.HDel(ctx, s.keys.probes, o).Result()
	if err != nil {
		return s.classifyOp(err, "HDEL "+s.keys.probes)
	}
	if n == 0 {
		return fmt.Errorf("%w for %q in %q: it is probed at its own address already", ErrNoProbe, origin, s.keys.probes)
	}
	return nil
}

func parseProbe(origin, probe string) (string, string, error) {
	o, err := backend.ParseOrigin(origin)
	if err != nil {
		return "", "", err
	}
	p, err := backend.ParseOrigin(probe)
	if err != nil {
		return "", "", err
	}
	return o, p, nil
}

// ReplaceWithProbes is Replace, and also makes the probe hash exactly
// probes (origin -> probe origin), in the same MULTI/EXEC. Every URL and
// origin is validated first; if any fails, nothing is written. A nil
// probes leaves the probe hash as it is (that is Replace).
func (s *Store) ReplaceWithProbes(ctx context.Context, urls []string, probes map[string]string) error {
	if len(urls) == 0 {
		return ErrNoURLs
	}
	if err := validateAll(urls); err != nil {
		return err
	}
	var hash []any
	for _, o := range slices.Sorted(maps.Keys(probes)) {
		o, p, err := parseProbe(o, probes[o])
		if err != nil {
			return err
		}
		hash = append(hash, o, p)
	}
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		// The new list is the seeder's: none of its entries is one the
		// registration reconciler put there (members.go), so none is ever
		// taken out by it. Live registrations that it lacks come back at
		// the reconciler's next round.
		p.Del(ctx, s.key, s.keys.tally, s.keys.quarantine, s.keys.joined)
		p.RPush(ctx, s.key, toArgs(urls)...)
		s.bump(ctx, p)
		if probes != nil {
			p.Del(ctx, s.keys.probes)
			if len(hash) > 0 {
				p.HSet(ctx, s.keys.probes, hash...)
			}
		}
		return nil
	})
	return s.classifyTx(cmds, err)
}
