package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/batch"
	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
)

// Requests in flight, shared through Redis, for the least-connections and
// power-of-two-choices strategies.
//
// Each dispatcher publishes how many requests it has in flight to each
// entry in one hash, "{servers}:inflight", under fields "ID|ENTRY", and
// renews its own expiry in the sorted set "{servers}:alive" (member ID,
// score the time, in Redis's own clock, after which its counts no longer
// count). A dispatcher that dies stops renewing: within InflightTTL its
// counts stop steering the others, and the next script call deletes them.
//
// Every call is one script (inflightScript) that first replaces this
// dispatcher's fields with its counts as it knows them now (absolute
// values, not increments, so a call that failed or timed out, whose effect
// is unknown, is corrected by the next one), then takes the picks asked
// for, each adding one to its entry, and returns the picks and the counts
// of the other live dispatchers. Calls are serialized per Inflight, and
// concurrent picks share a call, as the rotation steps do (rotate.go):
// least-connections costs one round trip to pick, shared, and one to
// release, shared with the picks and releases around it.

// InflightTTL is how long a dispatcher's counts live without a renewal.
const InflightTTL = 10 * time.Second

// inflightRenew is how often an Inflight renews its counts when it has
// nothing else to send (Keepalive).
const inflightRenew = 2 * time.Second

// inflightScript: KEYS[1] the counts hash, KEYS[2] the alive set, KEYS[3]
// the tie-break turn. ARGV: ID, TTL (ms), own pairs M, then M pairs ENTRY
// COUNT (this dispatcher's counts), then groups of picks, each: picks N,
// candidates C, then C pairs ENTRY WEIGHT, in rotation order. Each group's
// picks choose among that group's candidates only: picks that share a call
// may come from different snapshots of the list. It returns how many
// entries it chose, the chosen entries in order (a group without
// candidates chooses none), then the other live dispatchers' summed counts
// as pairs ENTRY COUNT.
//
// A pick takes the candidate with the fewest requests in flight per unit of
// weight, over every live dispatcher. Among equals it takes the first at or
// after the turn, and moves the turn past it, so an idle pool still
// rotates. Fields of dispatchers that are not live (expired, or withdrawn)
// are deleted as they are met.
var inflightScript = redis.NewScript(luaCall + `
local t = call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, ttl, nown = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix = id .. "|"
local live = {}
for _, who in ipairs(call("ZRANGEBYSCORE", KEYS[2], "(" .. now, "+inf")) do live[who] = true end
call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
call("ZADD", KEYS[2], now + ttl, id)
local own, others = {}, {}
local i = 4
for _ = 1, nown do
  own[ARGV[i]] = tonumber(ARGV[i + 1])
  i = i + 2
end
local all = call("HGETALL", KEYS[1])
for j = 1, #all, 2 do
  local f = all[j]
  local sep = string.find(f, "|", 1, true)
  local who, e = "", f
  if sep then who, e = string.sub(f, 1, sep - 1), string.sub(f, sep + 1) end
  if who == id then
    if not own[e] then call("HDEL", KEYS[1], f) end
  elseif live[who] then
    others[e] = (others[e] or 0) + (tonumber(all[j + 1]) or 0)
  else
    call("HDEL", KEYS[1], f)
  end
end
local out = {"0"}
local turn = nil
while i <= #ARGV do
  local npick, ncand = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  i = i + 2
  local cands, weights = {}, {}
  for _ = 1, ncand do
    cands[#cands + 1] = ARGV[i]
    weights[#weights + 1] = tonumber(ARGV[i + 1])
    i = i + 2
  end
  if npick > 0 and #cands > 0 then
    turn = turn or tonumber(call("GET", KEYS[3]) or "0") or 0
    for _ = 1, npick do
      local best, bestLoad, bestW = nil, 0, 1
      for k = 0, #cands - 1 do
        local c = (turn + k) % #cands + 1
        local e = cands[c]
        local load = (others[e] or 0) + (own[e] or 0)
        if best == nil or load * bestW < bestLoad * weights[c] then
          best, bestLoad, bestW = c, load, weights[c]
        end
      end
      local e = cands[best]
      own[e] = (own[e] or 0) + 1
      out[#out + 1] = e
      turn = best % #cands
    end
  end
end
if turn then call("SET", KEYS[3], turn) end
for e, n in pairs(own) do
  if n > 0 then call("HSET", KEYS[1], prefix .. e, n) else call("HDEL", KEYS[1], prefix .. e) end
end
out[1] = tostring(#out - 1)
for e, n in pairs(others) do
  if n > 0 then
    out[#out + 1] = e
    out[#out + 1] = tostring(n)
  end
end
return out
`)

// Inflight is one dispatcher's side of the shared in-flight counts.
type Inflight struct {
	s     *Store
	id    string
	eager atomic.Bool                               // Release starts a call at once (least-connections)
	ttl   time.Duration                             // how long its counts live without a renewal: InflightTTL
	calls batch.Batcher[[]backend.Weighted, string] // picks (and syncs, nil) waiting for the call in flight

	mu      sync.Mutex
	own     map[string]int64 // this dispatcher's requests in flight, by entry
	others  map[string]int64 // the other live dispatchers' counts, as last read
	lastErr error
}

// NewInflight returns this dispatcher's counts, under id (unique among the
// dispatchers of one list: a host name and a random suffix). With eager,
// every Release sends the new count at once (sharing the call with the
// picks and releases around it); without, counts reach Redis with the next
// Sync.
func (s *Store) NewInflight(id string, eager bool) *Inflight {
	f := &Inflight{s: s, id: id, ttl: InflightTTL, own: map[string]int64{}, others: map[string]int64{}}
	f.eager.Store(eager)
	f.calls = batch.Batcher[[]backend.Weighted, string]{Trip: f.call, Timeout: s.stepTimeout, Short: pick.ErrNoBackends,
		Abandoned: func(_ []backend.Weighted, entry string) {
			if entry != "" {
				f.Release(entry) // counted for a pick whose caller gave up: give it back
			}
		}}
	return f
}

// Add counts one more request to entry, in this process only: the count
// reaches Redis with the next call. Release must follow.
func (f *Inflight) Add(entry string) {
	f.mu.Lock()
	f.own[entry]++
	f.mu.Unlock()
}

// Load returns the requests in flight to entry: the other dispatchers' as
// last read, plus this one's now.
func (f *Inflight) Load(entry string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.others[entry] + f.own[entry]
}

// Pick takes the candidate with the fewest requests in flight across every
// live dispatcher, per unit of weight, and counts one more request to it.
// A candidate's URL is the entry as the list holds it. Release must follow
// when the request ends. Concurrent picks share a round trip.
func (f *Inflight) Pick(ctx context.Context, cands []backend.Weighted) (string, error) {
	if len(cands) == 0 {
		return "", pick.ErrNoBackends
	}
	entry, err := f.calls.Do(ctx, cands)
	if err != nil {
		return "", f.s.classify(err)
	}
	return entry, nil
}

// Release counts one request to entry as over. It does not wait: the new
// count reaches Redis with the next call, which an eager Inflight starts
// at once if none is in flight.
func (f *Inflight) Release(entry string) {
	f.mu.Lock()
	if f.own[entry] > 0 {
		f.own[entry]--
		if f.own[entry] == 0 {
			delete(f.own, entry)
		}
	}
	f.mu.Unlock()
	if f.eager.Load() {
		f.calls.Kick()
	}
}

// SetEager makes every Release send the new count at once (sharing the
// call with the picks and releases around it), as least-connections needs,
// or leaves it for the next call.
func (f *Inflight) SetEager(eager bool) { f.eager.Store(eager) }

// Sync sends this dispatcher's counts and reads the others', without a
// pick, and returns the others' counts.
func (f *Inflight) Sync(ctx context.Context) (map[string]int64, error) {
	_, err := f.calls.Do(ctx, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		err = f.lastErr
	}
	return maps.Clone(f.others), err
}

// Keepalive renews this dispatcher's counts every inflightRenew until ctx
// is done, so that they outlive a quiet spell, and withdraws them on the
// way out.
func (f *Inflight) Keepalive(ctx context.Context) {
	t := time.NewTicker(inflightRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.Withdraw()
			return
		case <-t.C:
		}
		f.Sync(ctx)
	}
}

// Withdraw takes this dispatcher out of the live set, so that its counts
// stop counting at once rather than when they expire (on shutdown).
func (f *Inflight) Withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), f.s.stepTimeout)
	defer cancel()
	f.s.rdb.ZRem(ctx, f.s.keys.alive, f.id)
}

// Own returns this dispatcher's requests in flight, by entry.
func (f *Inflight) Own() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.own)
}

// Shared returns the requests in flight by entry, every live dispatcher's
// added up, as last read: the others' counts at the last call plus this
// dispatcher's own now.
func (f *Inflight) Shared() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := maps.Clone(f.others)
	for e, n := range f.own {
		out[e] += n
	}
	return out
}

// Calls is how many scripts this Inflight has sent.
func (f *Inflight) Calls() uint64 { return f.calls.Stats().RoundTrips }

// call is the round trip for a batch: this dispatcher's counts as they are
// now, and one pick for each element of batch that holds candidates, among
// its own (a nil element is a Sync, and gets ""). Consecutive picks with
// the same candidates, as picks from one snapshot have, travel as one
// group. The picks are counted before call returns.
func (f *Inflight) call(ctx context.Context, batch [][]backend.Weighted) ([]string, error) {
	f.mu.Lock()
	own := maps.Clone(f.own)
	f.mu.Unlock()
	args := []any{f.id, f.ttl.Milliseconds(), len(own)}
	for _, e := range slices.Sorted(maps.Keys(own)) {
		args = append(args, e, own[e])
	}
	npicks := 0
	for i := 0; i < len(batch); {
		cands, n := batch[i], 1
		for i+n < len(batch) && sameCandidates(batch[i+n], cands) {
			n++
		}
		if len(cands) > 0 {
			args = append(args, n, len(cands))
			for _, c := range cands {
				args = append(args, c.URL, max(c.Weight, 1))
			}
			npicks += n
		}
		i += n
	}
	keys := []string{f.s.keys.inflight, f.s.keys.alive, f.s.keys.turn}
	res, err := inflightScript.Run(ctx, f.s.rdb, keys, args...).StringSlice()
	var np int
	if err == nil && len(res) > 0 {
		np, _ = strconv.Atoi(res[0])
	}
	if err == nil && (len(res) == 0 || np != npicks || (len(res)-1-np)%2 != 0) {
		err = fmt.Errorf("%w: the in-flight script answered %d values for %d picks", pick.ErrUnavailable, len(res), npicks)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.lastErr = f.s.classify(err)
		return nil, f.lastErr
	}
	f.lastErr = nil
	f.others = map[string]int64{}
	for kv := res[1+np:]; len(kv) >= 2; kv = kv[2:] {
		v, _ := strconv.ParseInt(kv[1], 10, 64)
		f.others[kv[0]] = v
	}
	out := make([]string, len(batch))
	picks := res[1 : 1+np]
	for i, cands := range batch {
		if len(cands) > 0 {
			out[i], picks = picks[0], picks[1:]
			f.own[out[i]]++
		}
	}
	return out, nil
}

// sameCandidates reports whether a and b are the same candidate list: the
// same slice, as the picks from one snapshot share.
func sameCandidates(a, b []backend.Weighted) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// InFlight reads the requests in flight by entry, every live dispatcher's
// added up (what `seeder list` shows). An empty map means none are counted.
func (s *Store) InFlight(ctx context.Context) (map[string]int64, error) {
	var all *redis.MapStringStringCmd
	var alive *redis.ZSliceCmd
	var now *redis.TimeCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		alive = p.ZRangeWithScores(ctx, s.keys.alive, 0, -1)
		all = p.HGetAll(ctx, s.keys.inflight)
		return nil
	})
	if err != nil {
		return nil, s.classifyTx(cmds, err)
	}
	nowMs := float64(now.Val().UnixMilli())
	live := map[string]bool{}
	for _, z := range alive.Val() {
		if who, ok := z.Member.(string); ok && z.Score > nowMs {
			live[who] = true
		}
	}
	out := map[string]int64{}
	for f, v := range all.Val() {
		who, e, ok := strings.Cut(f, "|")
		if !ok || !live[who] {
			continue
		}
		if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
			out[e] += n
		}
	}
	return out, nil
}
