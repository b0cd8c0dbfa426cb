package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
)

// Coalescing: every pick is its own rotation step, but picks that arrive
// while a round trip to Redis is in flight share the next round trip.
//
// A pick that finds no round trip in flight makes one at once, for itself
// alone: an idle dispatcher adds no wait. Picks that arrive meanwhile queue
// up. When the round trip ends, the whole queue becomes the next batch, and
// the first pick in it is woken to lead it: it sends one script that takes
// one LMOVE step per pick, in queue order, and hands each pick its own
// entry. So under load there is one round trip per batch instead of one per
// request, while Redis still makes exactly one LMOVE per pick and the counts
// per backend stay exact. Each goroutine leads at most one batch, so no
// request is held back serving others'.

// stepScript takes ARGV[1] rotation steps of the list KEYS[1] and returns the
// number of invalid entries it stepped over (as a string), then the entries
// picked, in order; it stops early, returning fewer, if the list is empty or
// missing. Each step is the tutorial's LMOVE key key RIGHT LEFT (RPOPLPUSH
// when ARGV[2] is "1", for Redis older than 6.2). The steps are added to
// each entry's count in the hash KEYS[2], the tally that `seeder watch`
// shows, with one HINCRBY per distinct entry.
//
// Entries in the set KEYS[3] (the down set, which the health checks keep;
// see health.go), and the entries ARGV[3...] (the ones this Store has found
// invalid, see Store.parse), are stepped over inside the same script: a
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
// Skipping known-invalid entries here, rather than with one more round trip
// per entry met, keeps a pick from meeting invalid entries again and again
// while concurrent picks move the list under it.
//
// Entries longer than backend.MaxLen are invalid whatever they hold, and are
// stepped over the same way, by their length alone, without being known
// first: so Redis never sends one to a dispatcher, and a hostile 1 MB entry
// costs a pick no more bytes on the wire than any other. (Redis still copies
// it on each LMOVE that passes over it, about 1.5 ms for 1 MB.)
//
// A tally or down key of the wrong type (put there by hand) is ignored
// rather than failing picks: the list is the truth, the rest is advice.
// Any other error of any command (a command the user may not run, above
// all) fails the script, and so the picks (see luaCall): a pick that could
// not read the down set must not go to a backend marked down.
// All three keys share a hash slot (see sibling), so the script is
// Cluster-safe.
var stepScript = redis.NewScript(luaCall + `
local maxlen = ` + strconv.Itoa(backend.MaxLen) + `
local function step()
  if ARGV[2] == "1" then
    return call("RPOPLPUSH", KEYS[1], KEYS[1])
  end
  return call("LMOVE", KEYS[1], KEYS[1], "RIGHT", "LEFT")
end
local invalid = {}
for i = 3, #ARGV do invalid[ARGV[i]] = true end
local ndown = try("SCARD", KEYS[3])
local checkDown = ndown ~= nil and ndown > 0
local len = 0
local picks, tally, skipped = {"0"}, {}, 0
for i = 1, tonumber(ARGV[1]) do
  local e = step()
  if not e then break end
  local moved, sawDown = 1, false
  while true do
    local tooLong = #e > maxlen
    local isDown = not tooLong and checkDown and call("SISMEMBER", KEYS[3], e) == 1
    if not tooLong and not isDown and not invalid[e] then break end
    sawDown = sawDown or isDown
    if not isDown then skipped = skipped + 1 end
    if len == 0 then len = call("LLEN", KEYS[1]) end
    if moved >= len then
      if sawDown then
        return redis.error_reply("ALLDOWN every entry of the list is marked down or invalid")
      end
      return redis.error_reply("NOVALID every entry of the list is invalid")
    end
    e = step()
    moved = moved + 1
  end
  picks[i + 1] = e
  tally[e] = (tally[e] or 0) + 1
end
for e, n in pairs(tally) do
  try("HINCRBY", KEYS[2], e, n)
end
picks[1] = tostring(skipped)
return picks
`)

// maxInFlight is how many round trips one Store has in flight at once. One
// makes the largest batches, so the fewest round trips and script calls;
// two was measured no faster (make bench).
const maxInFlight = 1

// DefaultStepTimeout is how long a round trip may take unless
// SetStepTimeout says otherwise.
const DefaultStepTimeout = time.Second

// waiter is one queued pick. Waiters are reused (waiters pool), so done
// is signalled by a send, not closed.
type waiter struct {
	done  chan struct{} // receives once entry/err are set, or to make this pick lead
	entry string
	err   error
	batch []*waiter // set when this pick is woken to lead the batch
}

// coalescer is the queue of picks waiting for the round trip in flight.
type coalescer struct {
	mu       sync.Mutex
	inflight int       // round trips in flight
	queue    []*waiter // picks that arrived meanwhile, in order
	trips    uint64    // round trips made, for tests and benchmarks
	steps    uint64    // steps asked for
	maxLen   int       // largest batch seen
}

// step takes one rotation step for one pick and returns the entry it lands
// on, sharing a round trip with the picks around it.
func (s *Store) step(ctx context.Context) (string, error) {
	c := &s.co
	c.mu.Lock()
	if c.inflight < maxInFlight {
		// Room for one more round trip: go now, alone.
		c.inflight++
		c.mu.Unlock()
		me := &waiter{}
		s.lead(ctx, []*waiter{me})
		return me.entry, me.err
	}
	me := waiters.Get().(*waiter)
	c.queue = append(c.queue, me)
	c.mu.Unlock()
	defer me.release()

	select {
	case <-me.done:
	case <-ctx.Done():
		c.mu.Lock()
		if i := indexOf(c.queue, me); i >= 0 {
			// Still queued: leave, and no step is taken for this pick.
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			c.mu.Unlock()
			return "", s.classify(ctx.Err())
		}
		c.mu.Unlock()
		// Already in a batch (perhaps as its leader): that round trip has
		// its own deadline, so wait for it; the caller sees ctx's error.
		<-me.done
		if me.batch != nil {
			s.lead(ctx, me.batch)
		}
		return "", s.classify(ctx.Err())
	}
	if me.batch != nil {
		s.lead(ctx, me.batch)
	}
	return me.entry, me.err
}

var waiters = sync.Pool{New: func() any { return &waiter{done: make(chan struct{}, 1)} }}

// release returns w to the pool once nothing refers to it any more.
func (w *waiter) release() {
	w.entry, w.err, w.batch = "", nil, nil
	waiters.Put(w)
}

// lead makes one round trip for batch (whose first element is the caller),
// hands out the results, then passes the queue that built up meanwhile to
// its first pick, or marks the coalescer idle.
func (s *Store) lead(ctx context.Context, batch []*waiter) {
	entries, err := s.steps(ctx, len(batch))
	for i, w := range batch {
		switch {
		case err != nil:
			w.err = err
		case i < len(entries):
			w.entry = entries[i]
		default:
			w.err = pick.ErrNoBackends
		}
		if i > 0 {
			w.done <- struct{}{}
		}
	}

	c := &s.co
	c.mu.Lock()
	c.trips++
	c.steps += uint64(len(batch))
	c.maxLen = max(c.maxLen, len(batch))
	next := c.queue
	c.queue = nil
	if len(next) == 0 {
		c.inflight--
	}
	c.mu.Unlock()
	if len(next) > 0 {
		next[0].batch = next
		next[0].done <- struct{}{}
	}
}

// steps is the round trip: n rotation steps in one script call. It has a
// deadline of its own (SetStepTimeout) and ignores the leader's
// cancellation, because the other picks in the batch wait on it whatever
// happens to the leader's request.
func (s *Store) steps(ctx context.Context, n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.stepTimeout)
	defer cancel()
	for {
		legacy := "0"
		if s.legacy.Load() {
			legacy = "1"
		}
		args := append([]any{n, legacy}, *s.invalid.Load()...)
		res, err := stepScript.Run(ctx, s.rdb, []string{s.key, s.tally, s.down}, args...).StringSlice()
		if isUnknownCommand(err) && !s.legacy.Load() {
			s.legacy.Store(true)
			s.log.Info("redis has no LMOVE (older than 6.2); rotating with RPOPLPUSH")
			continue
		}
		if err != nil {
			return nil, s.classify(err)
		}
		if len(res) == 0 {
			return nil, fmt.Errorf("%w: the step script answered nothing", pick.ErrUnavailable)
		}
		if n, _ := strconv.ParseUint(res[0], 10, 64); n > 0 {
			s.skipped.Add(n)
		}
		if len(res) == 1 {
			return nil, pick.ErrNoBackends
		}
		return res[1:], nil
	}
}

// SetStepTimeout sets how long one round trip may take (default
// DefaultStepTimeout). A pick waits at most that long once its step is in
// flight, and before that as long as its own context allows.
func (s *Store) SetStepTimeout(d time.Duration) {
	if d > 0 {
		s.stepTimeout = d
	}
}

// CoalesceStats says how picks were grouped into round trips so far.
type CoalesceStats struct {
	RoundTrips uint64 // scripts sent
	Steps      uint64 // rotation steps asked for (one per pick, skips included)
	MaxBatch   int    // most steps in one round trip
}

// Coalescing reports how many round trips the picks so far took.
func (s *Store) Coalescing() CoalesceStats {
	s.co.mu.Lock()
	defer s.co.mu.Unlock()
	return CoalesceStats{RoundTrips: s.co.trips, Steps: s.co.steps, MaxBatch: s.co.maxLen}
}

// Tally returns how many rotation steps landed on each entry since the list
// was last replaced, counted by Redis in the same script as the steps, so
// it adds up the picks of every dispatcher sharing the list.
func (s *Store) Tally(ctx context.Context) (map[string]int64, error) {
	raw, err := s.rdb.HGetAll(ctx, s.tally).Result()
	if err != nil {
		return nil, s.classifyOp(err, "HGETALL "+s.tally)
	}
	tally := make(map[string]int64, len(raw))
	for entry, n := range raw {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %q holds %q for %q, not a count", pick.ErrWrongType, s.tally, n, entry)
		}
		tally[entry] = v
	}
	return tally, nil
}

// TallyKey returns the Redis key of the tally hash.
func (s *Store) TallyKey() string { return s.tally }

// DownKey returns the Redis key of the set of entries marked down, in the
// list's hash slot: "{servers}:down" for "servers".
func (s *Store) DownKey() string { return s.down }

// ProbeKey returns the Redis key of the hash of probe addresses, in the
// list's hash slot: "{servers}:probe" for "servers".
func (s *Store) ProbeKey() string { return s.probes }

// tallyKey puts the tally in the list's hash slot, so that one script may
// touch both in a Redis Cluster: "servers" gives "{servers}:picks", whose
// slot is that of "servers"; a key that has a hash tag already, such as
// "{lb}servers", gives "{lb}servers:picks".
func tallyKey(key string) string { return sibling(key, "picks") }

// sibling is the key named key + ":" + suffix in key's hash slot (see
// tallyKey). Every key the rotation uses beside the list is one.
func sibling(key, suffix string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key + ":" + suffix
		}
	}
	return "{" + key + "}:" + suffix
}

func indexOf(ws []*waiter, w *waiter) int {
	for i, x := range ws {
		if x == w {
			return i
		}
	}
	return -1
}
