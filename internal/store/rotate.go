package store

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/batch"
	"github.com/spreadlb/spread/internal/pick"
)

// Rotation takes the shared rotation's steps of one Store's list: every
// pick is its own step, but picks that arrive while a round trip to Redis
// is in flight share the next one (package batch). The leader of a batch
// sends one script that takes one LMOVE step per pick, in queue order, and
// hands each pick its own entry. So under load there is one round trip per
// batch instead of one per request, while Redis still makes exactly one
// LMOVE per pick and the counts per backend stay exact.
type Rotation struct {
	s     *Store
	log   *slog.Logger
	steps batch.Batcher[struct{}, string] // picks waiting for the round trip in flight

	skipped   atomic.Uint64                          // invalid entries stepped over (Skipped)
	invalid   atomic.Pointer[[]any]                  // entries found invalid, at most maxInvalid, for stepScript to skip
	hints     atomic.Pointer[hints]                  // what this dispatcher's pool knows ahead of Redis (SetHints)
	invalidMu sync.Mutex                             // serializes additions to invalid
	parsed    atomic.Pointer[map[string]parsedEntry] // backend.Parse's verdicts, by entry

	// legacy is set once the server has answered that it has no LMOVE
	// (Redis < 6.2); from then on a step uses RPOPLPUSH, which is the same
	// operation under its old name.
	legacy atomic.Bool
}

// NewRotation returns the rotation of s's list. A round trip may take
// s.StepTimeout(), as it is now.
func NewRotation(s *Store) *Rotation {
	r := &Rotation{s: s, log: s.log}
	r.steps = batch.Batcher[struct{}, string]{Trip: r.trip, Timeout: s.stepTimeout, Short: pick.ErrNoBackends}
	r.invalid.Store(&[]any{})
	r.parsed.Store(&map[string]parsedEntry{})
	r.hints.Store(&hints{})
	return r
}

// hints are what a dispatcher's pool tells the rotation step, as ARGV.
type hints struct {
	ejected []any // entries to step over as ejected (ahead of Redis)
	ramp    []any // pairs ENTRY SHARE, SHARE in (0, 1): slow start
}

// SetHints tells the rotation what this dispatcher knows that Redis may not
// yet: entries it has just ejected (stepped over as the ejected set's are,
// until Redis has them), and slow start's shares: an entry with share s
// (below 1) that a step lands on is taken with probability s, else
// stepped over. Shares are relative: the largest share among the eligible
// entries should be 1 (entries not listed are 1). It applies from the next
// round trip.
func (r *Rotation) SetHints(ejected []string, ramp map[string]float64) {
	h := &hints{ejected: toArgs(ejected)}
	for _, e := range slices.Sorted(maps.Keys(ramp)) {
		if s := ramp[e]; s < 1 {
			h.ramp = append(h.ramp, e, strconv.FormatFloat(max(s, 0.001), 'f', 4, 64))
		}
	}
	r.hints.Store(h)
}

// MaxSkips bounds how many invalid entries one pick steps over before it
// gives up with pick.ErrNoValidBackend. Each skipped entry costs one more round
// trip, for the request that meets it only; a healthy list costs exactly one.
const MaxSkips = 16

// Next takes one rotation step and returns the backend it lands on, which
// the caller must not modify (it is shared by the picks of that entry).
// Entries marked down are stepped over in Redis, in the same step (see
// stepScript). An entry that fails backend.Parse is counted (Skipped),
// logged the first time this Store meets it, skipped (it stays in the list)
// and the next step is taken, at most MaxSkips times.
func (r *Rotation) Next(ctx context.Context) (*url.URL, error) {
	_, u, err := r.NextEntry(ctx)
	return u, err
}

// NextEntry is Next, and also returns the entry as the list holds it.
func (r *Rotation) NextEntry(ctx context.Context) (string, *url.URL, error) {
	for range MaxSkips + 1 {
		entry, err := r.steps.Do(ctx, struct{}{})
		if err != nil {
			return "", nil, r.s.classify(err)
		}
		u, err := r.parse(entry)
		if err == nil {
			return entry, u, nil
		}
		r.skipped.Add(1)
	}
	return "", nil, pick.ErrNoValidBackend
}

// Skipped is how many invalid entries this rotation's picks have stepped
// over.
func (r *Rotation) Skipped() uint64 { return r.skipped.Load() }

// parsedEntry is backend.Parse's verdict on one entry.
type parsedEntry struct {
	u   *url.URL
	err error
}

// maxParsed bounds the verdicts a Store remembers: a list holds a few
// backends, but nothing stops a hostile one from holding millions.
const maxParsed = 1024

// maxInvalid and maxInvalidLen bound the invalid entries a Store asks
// stepScript to skip, as they travel with every round trip: at most 64, of
// at most 2 KiB each. Others cost a round trip each time a pick meets them;
// longer ones never reach a Store, as stepScript skips them by length.
const (
	maxInvalid    = 64
	maxInvalidLen = 2048
)

// parse is backend.Parse, remembered per entry: a list repeats the same few
// entries, and validating each pick anew was a measurable part of its cost.
func (r *Rotation) parse(entry string) (*url.URL, error) {
	m := r.parsed.Load()
	if p, ok := (*m)[entry]; ok {
		return p.u, p.err
	}
	u, err := backend.Parse(entry)
	if err != nil {
		r.log.Warn("skipping invalid rotation entry", "key", r.s.key, "err", err)
		r.invalidMu.Lock()
		if old := *r.invalid.Load(); len(old) < maxInvalid && len(entry) <= maxInvalidLen && !slices.Contains(old, any(entry)) {
			next := append(slices.Clip(old), entry)
			r.invalid.Store(&next)
		}
		r.invalidMu.Unlock()
	}
	if len(*m) < maxParsed {
		// Copy on write: readers never lock. Two picks racing here may
		// each add the entry; both verdicts are the same.
		next := maps.Clone(*m)
		next[entry] = parsedEntry{u, err}
		r.parsed.Store(&next)
	}
	return u, err
}

// stepScript takes ARGV[1] rotation steps of the list KEYS[1] and returns the
// number of invalid entries it stepped over (as a string), then the entries
// picked, in order; it stops early, returning fewer, if the list is empty or
// missing. Each step is the tutorial's LMOVE key key RIGHT LEFT (RPOPLPUSH
// when ARGV[2] is "1", for Redis older than 6.2). The steps are added to
// each entry's count in the hash KEYS[2], the tally that `seeder watch`
// shows, with one HINCRBY per distinct entry.
//
// Entries in the set KEYS[3] (the down set, which the health checks keep;
// see health.go), and the invalid entries of ARGV (the ones this Store has
// found invalid, see Store.parse), are stepped over inside the same script: a
// pick that lands on one takes another LMOVE, and another, until it lands
// on an entry that is neither. The list keeps its members and its order (a
// skipped entry goes to the front like any other), and the remaining
// entries keep an exact round robin among themselves. A pick that has
// moved LLEN times has seen every entry skipped, so the script fails: with
// ALLDOWN (pick.ErrAllDown) if one of them was down, else NOVALID
// (pick.ErrNoValidBackend). Neither the set nor the list can change while the
// script runs, so then every pick of the batch would fail. With nothing
// down or invalid, the usual case, a pick is exactly one LMOVE, and the
// down set costs one SCARD per batch.
//
// Entries ejected now (the sorted set KEYS[6], scored with the end of
// their ejection; see eject.go), and those this dispatcher has just ejected
// (its hints, below), are stepped over the same way; the set is read once
// per batch (ZCARD, and only when it is not empty, TIME and
// ZRANGEBYSCORE). If every other entry is down or invalid, a pick takes the
// first ejected entry it passed rather than fail: an ejection takes a
// backend out of a pool that has others, never the last one.
//
// Slow start: an entry with a share s below 1 in the ramp table (ARGV, from
// this dispatcher's pool, SetHints) is taken with probability s when a step
// lands on it, else stepped over like a down one. Over a turn of the list
// the others are each taken once and it s times, so it gets s/(n-1+s) of
// the picks where a full one gets 1/n: its weight times s, as slow start
// means. The draws come from a Park-Miller generator seeded by the caller
// for each round trip (Redis's own math.random restarts from one seed in
// every script). A pick that passes over every entry takes the first one it
// passed for the ramp.
//
// ARGV: [1] the picks, [2] "1" for RPOPLPUSH, [3] K, then K invalid
// entries, then J, then J entries ejected here, then the seed, then pairs
// ENTRY SHARE.
//
// Skipping known-invalid entries here, rather than with one more round trip
// per entry met, keeps a pick from meeting invalid entries again and again
// while concurrent picks move the list under it.
//
// Entries longer than backend.MaxLen are invalid whatever they hold, and
// get out of the rotation's way for good: the first step that lands on one
// takes it out of the list (it is at the head, where the step put it) and
// appends it to the quarantine list KEYS[4] ("{servers}:quarantine", which
// `seeder list` reports), bumping the list's version KEYS[5] (version.go),
// and steps on. So Redis never sends one to a dispatcher, it costs one
// extra LMOVE once rather than a copy of it on every turn of the list, and
// the other entries keep their exact rotation, since taking one entry out
// changes nobody else's order. A list left with nothing but such entries
// ends empty, and the pick that emptied it fails with NOVALID.
//
// A tally or down key of the wrong type (put there by hand) is ignored
// rather than failing picks: the list is the truth, the rest is advice.
// Any other error of any command (a command the user may not run, above
// all) fails the script, and so the picks (see luaCall): a pick that could
// not read the down set must not go to a backend marked down.
// All six keys share a hash slot (see sibling), so the script is
// Cluster-safe.
var stepScript = redis.NewScript(luaCall + bumpLua + `
local maxlen = ` + strconv.Itoa(backend.MaxLen) + `
local function step()
  if ARGV[2] == "1" then
    return call("RPOPLPUSH", KEYS[1], KEYS[1])
  end
  return call("LMOVE", KEYS[1], KEYS[1], "RIGHT", "LEFT")
end
local invalid, ejected, ramp = {}, {}, {}
local checkEjected, checkRamp = false, false
local a = 3
for _ = 1, tonumber(ARGV[a]) do a = a + 1; invalid[ARGV[a]] = true end
a = a + 1
for _ = 1, tonumber(ARGV[a]) do a = a + 1; ejected[ARGV[a]], checkEjected = true, true end
a = a + 1
local seed = tonumber(ARGV[a]) or 1
for j = a + 1, #ARGV - 1, 2 do ramp[ARGV[j]], checkRamp = tonumber(ARGV[j + 1]), true end
local function draw()
  seed = (seed * 16807) % 2147483647
  return seed / 2147483647
end
local ndown = try("SCARD", KEYS[3])
local checkDown = ndown ~= nil and ndown > 0
local nejected = try("ZCARD", KEYS[6])
if nejected ~= nil and nejected > 0 then
  local t = call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for _, e in ipairs(call("ZRANGEBYSCORE", KEYS[6], "(" .. now, "+inf")) do
    ejected[e], checkEjected = true, true
  end
end
local len = 0
local picks, tally, skipped, quarantined = {"0"}, {}, 0, false
local function refuse(msg)
  if quarantined then bump(KEYS[5]) end
  return redis.error_reply(msg)
end
for i = 1, tonumber(ARGV[1]) do
  local e = step()
  local moved, sawDown, fallback, passed = 0, false, nil, nil
  while e do
    if #e > maxlen then
      call("LPOP", KEYS[1])
      call("RPUSH", KEYS[4], e)
      quarantined, skipped = true, skipped + 1
      if len > 0 then len = len - 1 end
    else
      moved = moved + 1
      local isDown = checkDown and call("SISMEMBER", KEYS[3], e) == 1
      if not isDown and not invalid[e] then
        if checkEjected and ejected[e] then
          fallback = fallback or e
        elseif checkRamp and ramp[e] and draw() >= ramp[e] then
          passed = passed or e
        else
          break
        end
      else
        sawDown = sawDown or isDown
        if not isDown then skipped = skipped + 1 end
      end
      if len == 0 then len = call("LLEN", KEYS[1]) end
      if moved >= len then
        if passed or fallback then
          e = passed or fallback
          break
        end
        if sawDown then
          return refuse("ALLDOWN every entry of the list is marked down or invalid")
        end
        return refuse("NOVALID every entry of the list is invalid")
      end
    end
    e = step()
  end
  if not e then
    if quarantined and i == 1 then
      return refuse("NOVALID every entry of the list was longer than " .. maxlen .. " bytes: moved to " .. KEYS[4])
    end
    break
  end
  picks[i + 1] = e
  tally[e] = (tally[e] or 0) + 1
end
for e, n in pairs(tally) do
  try("HINCRBY", KEYS[2], e, n)
end
if quarantined then bump(KEYS[5]) end
picks[1] = tostring(skipped)
return picks
`)

// DefaultStepTimeout is how long a round trip may take unless
// SetStepTimeout says otherwise.
const DefaultStepTimeout = time.Second

// trip is the round trip: one rotation step per pick of the batch, in one
// script call. Its context ends by the batch's deadline (package batch),
// whatever happens to the leader's request.
func (r *Rotation) trip(ctx context.Context, picks []struct{}) ([]string, error) {
	for {
		legacy := "0"
		if r.legacy.Load() {
			legacy = "1"
		}
		invalid, h := *r.invalid.Load(), r.hints.Load()
		args := make([]any, 0, 6+len(invalid)+len(h.ejected)+len(h.ramp))
		args = append(append(append(args, len(picks), legacy, len(invalid)), invalid...), len(h.ejected))
		args = append(append(args, h.ejected...), rand.Int32N(2147483646)+1)
		args = append(args, h.ramp...)
		keys := []string{r.s.key, r.s.keys.tally, r.s.keys.down, r.s.keys.quarantine, r.s.keys.version, r.s.keys.ejected}
		res, err := stepScript.Run(ctx, r.s.rdb, keys, args...).StringSlice()
		if isUnknownCommand(err) && !r.legacy.Load() {
			r.legacy.Store(true)
			r.log.Info("redis has no LMOVE (older than 6.2); rotating with RPOPLPUSH")
			continue
		}
		if err != nil {
			return nil, r.s.classify(err)
		}
		if len(res) == 0 {
			return nil, fmt.Errorf("%w: the step script answered nothing", pick.ErrUnavailable)
		}
		if n, _ := strconv.ParseUint(res[0], 10, 64); n > 0 {
			r.skipped.Add(n)
		}
		if len(res) == 1 {
			return nil, pick.ErrNoBackends
		}
		return res[1:], nil
	}
}

// Stats says how the picks so far were grouped into round trips: one
// request is one rotation step asked for (skips included).
func (r *Rotation) Stats() batch.Stats { return r.steps.Stats() }

// Tail returns the last n entries of the list, the next pick last, and
// the list's length (Store.Tail).
func (r *Rotation) Tail(ctx context.Context, n int) ([]string, int64, error) { return r.s.Tail(ctx, n) }

// Tally returns how many rotation steps landed on each entry since the list
// was last replaced, counted by Redis in the same script as the steps, so
// it adds up the picks of every dispatcher sharing the list.
func (s *Store) Tally(ctx context.Context) (map[string]int64, error) {
	raw, err := s.rdb.HGetAll(ctx, s.keys.tally).Result()
	if err != nil {
		return nil, s.classifyOp(err, "HGETALL "+s.keys.tally)
	}
	tally := make(map[string]int64, len(raw))
	for entry, n := range raw {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %q holds %q for %q, not a count", pick.ErrWrongType, s.keys.tally, n, entry)
		}
		tally[entry] = v
	}
	return tally, nil
}

// Quarantine returns how many entries the rotation step has moved out of
// the list for their length (see stepScript), and the first of them, at
// most limit, as the quarantine list holds them (each up to whatever size
// it was: cut them before showing them).
func (s *Store) Quarantine(ctx context.Context, limit int) (n int64, first []string, err error) {
	var size *redis.IntCmd
	var head *redis.StringSliceCmd
	cmds, err := s.txPipelined(ctx, func(p redis.Pipeliner) error {
		size = p.LLen(ctx, s.keys.quarantine)
		head = p.LRange(ctx, s.keys.quarantine, 0, int64(limit)-1)
		return nil
	})
	if err != nil {
		return 0, nil, s.classifyTx(cmds, err)
	}
	return size.Val(), head.Val(), nil
}
