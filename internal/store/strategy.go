package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/pick"
)

// The strategy every dispatcher on the list runs, when one is stored: a
// JSON document at "{servers}:strategy", written by `seeder strategy` or a
// dispatcher's POST /strategy, read by every dispatcher a few times a
// second. Without it, each dispatcher runs its own STRATEGY.

// StoredStrategy is a strategy stored beside the list.
type StoredStrategy struct {
	Name string `json:"name"` // a STRATEGY value
	// Settings are the strategy's settings given with it (HASH_KEY, ...);
	// the others take each dispatcher's environment, then their defaults.
	Settings map[string]string `json:"settings,omitempty"`
	By       string            `json:"by"` // who stored it: "seeder", or "admin (...)"
	At       time.Time         `json:"at"` // when, by the writer's clock
}

// ErrBadStoredStrategy is returned (wrapped, with the reason) when the
// strategy key holds something that is not a stored strategy.
var ErrBadStoredStrategy = errors.New("the stored strategy does not parse")

// Strategy reads the stored strategy. raw is the document as stored, so
// that a reader can tell a change cheaply; ok is false when none is stored.
func (s *Store) Strategy(ctx context.Context) (st StoredStrategy, raw string, ok bool, err error) {
	raw, err = s.rdb.Get(ctx, s.keys.strategy).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return st, "", false, nil
	case err != nil:
		err = s.classifyOp(err, "GET "+s.keys.strategy)
		if errors.Is(err, pick.ErrWrongType) {
			err = fmt.Errorf("%w: %q is not a string", ErrBadStoredStrategy, s.keys.strategy)
		}
		return st, "", false, err
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil || st.Name == "" {
		return st, raw, true, fmt.Errorf("%w: %q holds %.80q", ErrBadStoredStrategy, s.keys.strategy, raw)
	}
	return st, raw, true, nil
}

// SetStrategy stores st for every dispatcher on the list. The caller has
// checked it (balance.Configure): a dispatcher that cannot run it keeps
// its strategy and says why.
func (s *Store) SetStrategy(ctx context.Context, st StoredStrategy) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.classifyOp(s.rdb.Set(ctx, s.keys.strategy, b, 0).Err(), "SET "+s.keys.strategy)
}

// ClearStrategy removes the stored strategy: every dispatcher goes back to
// its own STRATEGY. It reports whether one was stored.
func (s *Store) ClearStrategy(ctx context.Context) (bool, error) {
	n, err := s.rdb.Del(ctx, s.keys.strategy).Result()
	return n > 0, s.classifyOp(err, "DEL "+s.keys.strategy)
}

// StrategyKey returns the Redis key of the stored strategy, in the list's
// hash slot: "{servers}:strategy" for "servers".
func (s *Store) StrategyKey() string { return s.keys.strategy }
