package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
// power-of-two-choices strategies (and any strategy that weighs backends by
// their load).
//
// Each dispatcher keeps its own counts in a hash of its own,
// "{servers}:inflight:ID" (entry -> requests it has in flight there), and
// the scripts keep their sum over every live dispatcher in
// "{servers}:inflight" (entry -> requests in flight), so that a pick reads
// a candidate's load with one HGET, whatever the number of dispatchers.
// A dispatcher renews its expiry in the sorted set "{servers}:alive"
// (member ID, score the time, in Redis's own clock, after which its counts
// no longer count) with every call. One that dies stops renewing: within
// InflightTTL the next call of any other takes its counts out of the sum
// and deletes its hash.
//
// A call sends only the counts that changed since the last call that
// succeeded, as absolute values (so sending one again does no harm). After
// a call whose effect is unknown (it failed or timed out: Redis may have
// counted its picks), the next call sends every count, and the script
// replaces the dispatcher's hash with them: a count lost or counted twice
// is corrected by the next call, as before, without every call paying for
// it.
//
// The candidates of a pick travel once, not with every call: a list of
// candidates (a snapshot's eligible entries, with their weights) is stored
// in "{servers}:cands:DIGEST", named by a digest of its contents, the first
// time a call needs it, and a pick names it. It lives for candsTTL after
// its last use. A pick reads at most pickWindow candidates of it (the ones
// at and after the turn, see inflightScript) and their loads, so its cost
// does not grow with the list: up to pickWindow distinct entries, the
// pick is exact least-connections over all of them.
//
// Concurrent picks share a call, as the rotation steps do (rotate.go):
// least-connections costs one round trip to pick, shared, and one to
// release, shared with the picks and releases around it.

// InflightTTL is how long a dispatcher's counts live without a renewal.
const InflightTTL = 10 * time.Second

// inflightRenew is how often an Inflight renews its counts when it has
// nothing else to send (Keepalive).
const inflightRenew = 2 * time.Second

// pickWindow is how many candidates a pick weighs: all of them up to this
// many, else the pickWindow at and after the turn.
const pickWindow = 64

// candsTTL is how long a stored list of candidates lives after its last
// use.
const candsTTL = time.Minute

// dropLua is the start of the in-flight scripts, after luaCall: drop(h)
// takes the dispatcher hash h out of the sum KEYS[1] and deletes it.
const dropLua = `
local function drop(h)
  local all = call("HGETALL", h)
  for j = 1, #all, 2 do
    if call("HINCRBY", KEYS[1], all[j], -tonumber(all[j + 1])) <= 0 then call("HDEL", KEYS[1], all[j]) end
  end
  call("DEL", h)
end
`

// inflightScript: KEYS[1] the sum, KEYS[2] the alive set, KEYS[3] the
// tie-break turn, KEYS[4] this dispatcher's hash, KEYS[4+g] group g's
// candidate list. ARGV: ID, TTL (ms), "full" or "delta", changes M, "1" to
// return the sum, then M pairs ENTRY COUNT (this dispatcher's counts that
// changed; with "full", all of them), then one pair per group: picks N,
// candidates C. Each group's picks choose among that group's candidates
// only: picks that share a call may come from different snapshots of the
// list.
//
// Before it writes anything, it checks that every group's candidate list
// is stored, with C entries ("WEIGHT ENTRY" each); if not, it fails with
// NOCANDS and the groups missing, and the caller stores them and calls
// again. It returns the number of picks, "1" if this dispatcher's counts
// had been lost (it had expired, or Redis lost its data) and must be sent
// in full, the chosen entries in order (a group without candidates chooses
// none), then, if asked, the sum as pairs ENTRY COUNT.
//
// A pick takes the candidate with the fewest requests in flight per unit
// of weight, over every live dispatcher, among the pickWindow candidates
// at and after the turn (all of them, for a shorter list). Among equals it
// takes the one due first in a weighted rotation, and moves the turn past
// it, so an idle pool still rotates, each candidate taken as often as its
// weight says, and a longer list is weighed a window at a time, every
// entry in its turn. The turn is a cursor over rounds of the list: place
// turn mod C of round turn / C. A candidate of weight W takes part in W
// rounds of every M, the largest weight in the window, spread evenly
// (round r, when floor((r+1)W/M) > floor(rW/M)), and is due at the first
// cursor at or after the turn at its place in such a round: with equal
// weights, every round, and the rotation is the plain one
// (balance.dueAt computes the same). The counts of dispatchers that are no
// longer live are taken out of the sum as they are met.
var inflightScript = redis.NewScript(luaCall + dropLua + `
local id, ttl, mode, nch = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local groups, missing = {}, {}
local i = 6 + 2 * nch
while i <= #ARGV do
  local g = #groups + 1
  local grp = {npick = tonumber(ARGV[i]), n = tonumber(ARGV[i + 1]), key = KEYS[4 + g]}
  if grp.n > 0 and try("LLEN", grp.key) ~= grp.n then missing[#missing + 1] = tostring(g) end
  groups[g] = grp
  i = i + 2
end
if #missing > 0 then return redis.error_reply("NOCANDS " .. table.concat(missing, " ")) end

local t = call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = call("ZSCORE", KEYS[2], id)
local fresh = (not score) or tonumber(score) <= now
for _, who in ipairs(call("ZRANGEBYSCORE", KEYS[2], "-inf", now)) do
  drop(KEYS[1] .. ":" .. who)
end
call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
call("ZADD", KEYS[2], now + ttl, id)
if mode == "full" or fresh then drop(KEYS[4]) end
local j = 6
for _ = 1, nch do
  local e, n = ARGV[j], tonumber(ARGV[j + 1])
  local old = tonumber(call("HGET", KEYS[4], e) or "0")
  if n ~= old then
    if n > 0 then call("HSET", KEYS[4], e, n) else call("HDEL", KEYS[4], e) end
    if call("HINCRBY", KEYS[1], e, n - old) <= 0 then call("HDEL", KEYS[1], e) end
  end
  j = j + 2
end

local out = {"0", (fresh and mode ~= "full") and "1" or "0"}
local turn, load, picked = nil, {}, {}
for _, grp in ipairs(groups) do
  if grp.npick > 0 and grp.n > 0 then
    call("PEXPIRE", grp.key, ` + strconv.FormatInt(candsTTL.Milliseconds(), 10) + `)
    turn = turn or math.floor(tonumber(call("GET", KEYS[3]) or "0") or 0)
    local cache = {}
    local function at(x)
      if not cache[x] then
        local vals = call("LRANGE", grp.key, x, math.min(x, grp.n - 1) + ` + strconv.Itoa(pickWindow-1) + `)
        for k, v in ipairs(vals) do
          local sp = string.find(v, " ", 1, true)
          cache[x + k - 1] = {string.sub(v, sp + 1), tonumber(string.sub(v, 1, sp - 1))}
        end
      end
      return cache[x]
    end
    local n, w = grp.n, math.min(grp.n, ` + strconv.Itoa(pickWindow) + `)
    -- idiv is a / b rounded down, for whole a >= 0 and b > 0, exactly.
    local function idiv(a, b) return (a - a % b) / b end
    for _ = 1, grp.npick do
      local t0 = turn % n
      local m = 1
      for k = 0, w - 1 do m = math.max(m, at((t0 + k) % n)[2]) end
      local best, bestE, bestLoad, bestW, bestDue = nil, nil, 0, 1, 0
      for k = 0, w - 1 do
        local x = (t0 + k) % n
        local c = at(x)
        local e, wt = c[1], c[2]
        local l = load[e]
        if l == nil then
          l = tonumber(call("HGET", KEYS[1], e) or "0") or 0
          load[e] = l
        end
        -- due: the first cursor at or after the turn at x's place in a
        -- round it takes part in (balance.dueAt).
        local cur = turn + k
        local q = idiv(cur, n) % m
        local j = idiv(q * wt, m) + 1
        local due = cur + (idiv(j * m + wt - 1, wt) - 1 - q) * n
        if best == nil or l * bestW < bestLoad * wt or (l * bestW == bestLoad * wt and due < bestDue) then
          best, bestE, bestLoad, bestW, bestDue = x, e, l, wt, due
        end
      end
      load[bestE] = load[bestE] + 1
      picked[bestE] = (picked[bestE] or 0) + 1
      out[#out + 1] = bestE
      turn = (bestDue + 1) % (m * n)
    end
  end
end
if turn then call("SET", KEYS[3], turn) end
for e, k in pairs(picked) do
  call("HINCRBY", KEYS[4], e, k)
  call("HINCRBY", KEYS[1], e, k)
end
out[1] = tostring(#out - 2)
if ARGV[5] == "1" then
  for _, v in ipairs(call("HGETALL", KEYS[1])) do out[#out + 1] = v end
end
return out
`)

// withdrawScript takes ARGV[1], whose hash is KEYS[3], out of the sum
// KEYS[1] and the alive set KEYS[2].
var withdrawScript = redis.NewScript(luaCall + dropLua + `
drop(KEYS[3])
call("ZREM", KEYS[2], ARGV[1])
return 1
`)

// Inflight is one dispatcher's side of the shared in-flight counts.
type Inflight struct {
	s     *Store
	id    string
	hash  string                                    // this dispatcher's counts: "{servers}:inflight:ID"
	eager atomic.Bool                               // Release starts a call at once (least-connections)
	ttl   time.Duration                             // how long its counts live without a renewal: InflightTTL
	calls batch.Batcher[[]backend.Weighted, string] // picks (and syncs, nil) waiting for the call in flight

	mu       sync.Mutex
	own      map[string]int64 // this dispatcher's requests in flight, by entry, now
	sent     map[string]int64 // what Redis holds of them, as of the last call that succeeded
	dirty    map[string]bool  // entries whose count changed since Redis last heard it
	full     bool             // the next call sends every count (the last one's effect is unknown)
	others   map[string]int64 // the other live dispatchers' counts, as last read
	lastErr  error
	sets     map[*backend.Weighted]*candSet // candidate lists, by the first element of the slice they came in
	uploaded atomic.Uint64                  // candidate lists stored (UploadedForTest)
}

// candSet is one list of candidates as a pick names it in Redis.
type candSet struct {
	key  string         // "{servers}:cands:DIGEST"
	n    int            // how many
	vals []any          // "WEIGHT ENTRY", in order: what is stored
	in   map[string]int // entry -> its weight: a pick must be one of them
}

// maxSets bounds the candidate lists an Inflight remembers: one per
// snapshot of the list, and a strategy picks from the newest.
const maxSets = 8

// NewInflight returns this dispatcher's counts, under id (unique among the
// dispatchers of one list: a host name and a random suffix). With eager,
// every Release sends the new count at once (sharing the call with the
// picks and releases around it); without, counts reach Redis with the next
// Sync.
func (s *Store) NewInflight(id string, eager bool) *Inflight {
	f := &Inflight{s: s, id: id, hash: s.keys.inflight + ":" + id, ttl: InflightTTL, full: true,
		own: map[string]int64{}, sent: map[string]int64{}, dirty: map[string]bool{}, others: map[string]int64{},
		sets: map[*backend.Weighted]*candSet{}}
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
	f.dirty[entry] = true
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
// live dispatcher, per unit of weight (among equals, the one due first in
// a weighted rotation: each taken as often as its weight says), and counts
// one more request to it. A candidate's URL is the entry as the list holds it. Release must follow
// when the request ends. Concurrent picks share a round trip. Up to
// pickWindow (64) distinct candidates the pick is exact; beyond, it weighs
// the 64 at and after the turn (see inflightScript). Pass the same slice
// for the same candidates (a snapshot's): its list is stored in Redis once
// and named by the picks after.
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
		f.dirty[entry] = true
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

// Withdraw takes this dispatcher's counts out of the shared ones at once,
// rather than when they expire (on shutdown).
func (f *Inflight) Withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), f.s.stepTimeout)
	defer cancel()
	withdrawScript.Run(ctx, f.s.rdb, []string{f.s.keys.inflight, f.s.keys.alive, f.hash}, f.id)
	f.mu.Lock()
	f.full = true
	f.mu.Unlock()
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

// set returns the candidate list of cands, made on first use. The caller
// holds mu.
func (f *Inflight) set(cands []backend.Weighted) *candSet {
	if cs, ok := f.sets[&cands[0]]; ok && cs.n == len(cands) {
		return cs
	}
	cs := &candSet{n: len(cands), vals: make([]any, len(cands)), in: make(map[string]int, len(cands))}
	h := sha256.New()
	for i, c := range cands {
		w := max(c.Weight, 1)
		v := strconv.Itoa(w) + " " + c.URL
		cs.vals[i] = v
		cs.in[c.URL] = w
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	cs.key = f.s.keys.cands + ":" + hex.EncodeToString(h.Sum(nil)[:16])
	if len(f.sets) >= maxSets {
		clear(f.sets) // the strategies pick from the newest snapshot; older ones are made again if met
	}
	f.sets[&cands[0]] = cs
	return cs
}

// upload stores cs in Redis, replacing whatever its key holds, in one
// transaction.
func (f *Inflight) upload(ctx context.Context, cs *candSet) error {
	cmds, err := f.s.txPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, cs.key)
		for i := 0; i < len(cs.vals); i += 1000 {
			p.RPush(ctx, cs.key, cs.vals[i:min(i+1000, len(cs.vals))]...)
		}
		p.PExpire(ctx, cs.key, candsTTL)
		return nil
	})
	if err != nil {
		return f.s.classifyTx(cmds, err)
	}
	f.uploaded.Add(1)
	return nil
}

// errNoCands is the script's answer when a candidate list it is asked to
// pick from is not stored.
const errNoCands = "NOCANDS"

// call is the round trip for a batch: this dispatcher's counts that
// changed (or all of them), and one pick for each element of batch that
// holds candidates, among its own (a nil element is a Sync, and gets "").
// Consecutive picks with the same candidates, as picks from one snapshot
// have, travel as one group. The picks are counted before call returns.
func (f *Inflight) call(ctx context.Context, batch [][]backend.Weighted) ([]string, error) {
	f.mu.Lock()
	mode := "delta"
	if f.full {
		mode = "full"
		for e := range f.own {
			f.dirty[e] = true
		}
	}
	changes := make(map[string]int64, len(f.dirty))
	for e := range f.dirty {
		changes[e] = f.own[e]
	}
	wantSum := slices.ContainsFunc(batch, func(c []backend.Weighted) bool { return len(c) == 0 })
	keys := []string{f.s.keys.inflight, f.s.keys.alive, f.s.keys.turn, f.hash}
	var sets []*candSet                   // the groups' lists
	elems := make([]*candSet, len(batch)) // each pick's list
	var groups []any
	npicks := 0
	for i := 0; i < len(batch); {
		cands, n := batch[i], 1
		for i+n < len(batch) && sameCandidates(batch[i+n], cands) {
			n++
		}
		if len(cands) > 0 {
			cs := f.set(cands)
			sets = append(sets, cs)
			keys = append(keys, cs.key)
			groups = append(groups, n, cs.n)
			npicks += n
			for k := range n {
				elems[i+k] = cs
			}
		}
		i += n
	}
	f.mu.Unlock()

	args := []any{f.id, f.ttl.Milliseconds(), mode, len(changes), map[bool]string{true: "1", false: "0"}[wantSum]}
	for _, e := range slices.Sorted(maps.Keys(changes)) {
		args = append(args, e, changes[e])
	}
	args = append(args, groups...)
	res, err := f.run(ctx, keys, args, sets)
	var np int
	if err == nil && len(res) >= 2 {
		np, _ = strconv.Atoi(res[0])
	}
	if err == nil && (len(res) < 2 || np != npicks || len(res)-2 < np || (len(res)-2-np)%2 != 0) {
		err = fmt.Errorf("%w: the in-flight script answered %d values for %d picks", pick.ErrUnavailable, len(res), npicks)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// Redis may have counted this call's picks, or not: the next call
		// sends every count.
		f.full = true
		f.lastErr = f.s.classify(err)
		return nil, f.lastErr
	}
	f.lastErr = nil
	if mode == "full" {
		clear(f.sent)
		f.full = false
	}
	for e, n := range changes {
		if n == 0 {
			delete(f.sent, e)
		} else {
			f.sent[e] = n
		}
		if f.own[e] == n {
			delete(f.dirty, e)
		}
	}
	if res[1] == "1" {
		// Redis had lost this dispatcher's counts (they expired, or its
		// data is gone): it holds only what this call sent. Send them all.
		f.full = true
		defer f.calls.Kick()
	}
	out := make([]string, len(batch))
	picks := res[2 : 2+np]
	for i, cands := range batch {
		if len(cands) == 0 {
			continue
		}
		e := picks[0]
		picks = picks[1:]
		if _, ok := elems[i].in[e]; !ok {
			// Redis names only candidates of the list this pick sent; refuse
			// anything else rather than send a client somewhere unchecked.
			f.full = true
			return nil, fmt.Errorf("%w: the in-flight script picked %q, not a candidate", pick.ErrNoValidBackend, backend.Truncate(e))
		}
		out[i] = e
		f.own[e]++
		f.sent[e]++
	}
	if wantSum {
		f.others = map[string]int64{}
		for kv := res[2+np:]; len(kv) >= 2; kv = kv[2:] {
			if v, _ := strconv.ParseInt(kv[1], 10, 64); v-f.sent[kv[0]] > 0 {
				f.others[kv[0]] = v - f.sent[kv[0]]
			}
		}
	}
	return out, nil
}

// run calls the script, storing the candidate lists it says are missing
// and calling it again (a list expires after candsTTL unused, and Redis may
// lose its data).
func (f *Inflight) run(ctx context.Context, keys []string, args []any, sets []*candSet) ([]string, error) {
	for try := 0; ; try++ {
		res, err := inflightScript.Run(ctx, f.s.rdb, keys, args...).StringSlice()
		missing, ok := strings.CutPrefix(errString(err), errNoCands+" ")
		if !ok || try == 2 {
			return res, err
		}
		for g := range strings.FieldsSeq(missing) {
			i, _ := strconv.Atoi(g)
			if i < 1 || i > len(sets) {
				return nil, fmt.Errorf("%w: the in-flight script names a group %q it was not sent", pick.ErrUnavailable, g)
			}
			if err := f.upload(ctx, sets[i-1]); err != nil {
				return nil, err
			}
		}
	}
}

// errString is err's message, "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sameCandidates reports whether a and b are the same candidate list: the
// same slice, as the picks from one snapshot share.
func sameCandidates(a, b []backend.Weighted) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// InFlight reads the requests in flight by entry, every live dispatcher's
// added up (what `seeder list` shows): the sum the scripts keep, less the
// counts of dispatchers that have expired since the last script call. An
// empty map means none are counted.
func (s *Store) InFlight(ctx context.Context) (map[string]int64, error) {
	var sum *redis.MapStringStringCmd
	var alive *redis.ZSliceCmd
	var now *redis.TimeCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		alive = p.ZRangeWithScores(ctx, s.keys.alive, 0, -1)
		sum = p.HGetAll(ctx, s.keys.inflight)
		return nil
	})
	if err != nil {
		return nil, s.classifyTx(cmds, err)
	}
	out := map[string]int64{}
	for e, v := range sum.Val() {
		if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
			out[e] = n
		}
	}
	nowMs := float64(now.Val().UnixMilli())
	var expired []string
	for _, z := range alive.Val() {
		if who, ok := z.Member.(string); ok && z.Score <= nowMs {
			expired = append(expired, who)
		}
	}
	if len(expired) == 0 {
		return out, nil
	}
	var gone []*redis.MapStringStringCmd
	cmds, err = s.txPipelined(ctx, func(p redis.Pipeliner) error {
		for _, who := range expired {
			gone = append(gone, p.HGetAll(ctx, s.keys.inflight+":"+who))
		}
		return nil
	})
	if err != nil {
		return nil, s.classifyTx(cmds, err)
	}
	for _, g := range gone {
		for e, v := range g.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			if out[e] -= n; out[e] <= 0 {
				delete(out, e)
			}
		}
	}
	return out, nil
}
