// Package pick names the ways choosing a backend can fail. Package store
// returns them for what Redis answers, package pool and the strategies of
// package balance for what they find in the list, and each program decides
// what one means to its user: the dispatcher answers 503 to all of them,
// each with its own explanation; the seeder exits with a status of its
// own.
//
// They live here, below store, pool and balance, so that none of those
// needs another to name an error, and a caller can tell them apart without
// importing the package that touches Redis.
package pick

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// What the list says: Redis answered, and there is no backend to choose.
var (
	// ErrNoBackends: the list is empty or the key does not exist.
	ErrNoBackends = errors.New("the rotation list is empty or missing")
	// ErrWrongType: the key holds something other than a list.
	ErrWrongType = errors.New("the rotation key holds a value that is not a list")
	// ErrNoValidBackend: every entry met in one pick failed validation.
	ErrNoValidBackend = errors.New("no valid backend URL in the rotation list")
	// ErrAllDown: every entry of the list is marked down by the health
	// checks.
	ErrAllDown = errors.New("all backends are down")
)

// What Redis does: it did not answer, or it refuses.
var (
	// ErrUnavailable: Redis did not answer (connection refused, timeout,
	// ...). Asking again later may help; a dispatcher picks from its last
	// snapshot of the list meanwhile.
	ErrUnavailable = errors.New("redis unavailable")
	// ErrNoPermission: Redis refused a command because the user in
	// REDIS_URL may not run it, or not on that key (an ACL denial,
	// NOPERM). It is a misconfiguration, not an outage: asking again will
	// not help, and Redis is up. Errors that wrap it are usually
	// *PermissionError, which names the command.
	ErrNoPermission = errors.New("the redis user lacks a permission")
	// ErrMisconfigured: Redis answered, and refuses what the settings ask
	// of it (a database number it does not have, say). Like
	// ErrNoPermission, it is not an outage.
	ErrMisconfigured = errors.New("redis refuses the configuration")
)

// PermissionError is a command that Redis refused to the user in REDIS_URL.
type PermissionError struct {
	// Command is the command refused, upper case, with its key where known:
	// "SCARD {servers}:down", "LLEN servers", "CLIENT|SETNAME". Empty when
	// Redis did not say which.
	Command string
	// Reply is what Redis answered.
	Reply string
}

func (e *PermissionError) Error() string {
	if e.Command == "" {
		return fmt.Sprintf("%v: %s", ErrNoPermission, e.Reply)
	}
	return fmt.Sprintf("%v to run %s: %s", ErrNoPermission, e.Command, e.Reply)
}

// Unwrap makes errors.Is(err, ErrNoPermission) true.
func (e *PermissionError) Unwrap() error { return ErrNoPermission }

// Name is the command without its key ("SCARD"), "" when unknown: a metric
// label that stays bounded.
func (e *PermissionError) Name() string {
	name, _, _ := strings.Cut(e.Command, " ")
	return name
}

// Unavailable reports a failure of Redis itself (ErrUnavailable, or a
// deadline that ran out waiting on it), as opposed to an answer (an empty
// list, all down, a refusal) or a client that went away.
func Unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// Refused reports Redis answering that the settings are wrong: a command
// the user may not run, or a database it does not have.
func Refused(err error) bool {
	return errors.Is(err, ErrNoPermission) || errors.Is(err, ErrMisconfigured)
}
