package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
)

// scriptCallPrefix starts the errors that the scripts raise when a command
// inside them fails (see luaCall): Redis's error code, then "spread: SCARD
// {servers}:down: " and the rest of what Redis answered.
const scriptCallPrefix = "spread: "

// luaCall is the start of every script: call runs a command and raises
// any error it gets, naming the command and its key, so that the error
// reaches Go whatever it is (Redis 7.0 words an ACL denial inside a script
// as "ERR The user executing the script can't run this command or
// subcommand", without the command's name). try is call, except that a key
// of the wrong type (put there by hand) reads as nil: only that error is
// ever tolerated, never a denial.
const luaCall = `
local function fail(cmd, key, r)
  local code, rest = string.match(r.err, "^(%S+) (.*)$")
  if not code then code, rest = "ERR", r.err end
  local msg = code .. " ` + scriptCallPrefix + `" .. cmd .. " " .. tostring(key or "") .. ": " .. rest
  if redis.REDIS_VERSION then
    -- Redis 7 replies with an error table as it is, keeping its code and
    -- counting the error once in INFO errorstats.
    r.err = msg
    error(r)
  end
  error(msg)
end
local function call(cmd, ...)
  local r = redis.pcall(cmd, ...)
  if type(r) == "table" and r.err then fail(cmd, (...), r) end
  return r
end
local function try(cmd, ...)
  local r = redis.pcall(cmd, ...)
  if type(r) == "table" and r.err then
    if string.sub(r.err, 1, 9) == "WRONGTYPE" then return nil end
    fail(cmd, (...), r)
  end
  return r
end
`

var (
	// "NOPERM this user has no permissions to run the 'scard' command"
	deniedCommand = regexp.MustCompile(`to run the '([^']+)' command`)
)

// classify maps what go-redis returns to this package's errors.
func (s *Store) classify(err error) error { return s.classifyOp(err, "") }

// classifyOp is classify for a command sent directly, op naming it and its
// key ("LLEN servers"), for a permission error whose reply does not say.
func (s *Store) classifyOp(err error, op string) error {
	if err == nil {
		return nil
	}
	if classified(err) {
		return err
	}
	msg := err.Error()
	switch {
	case errors.Is(err, redis.Nil):
		return pick.ErrNoBackends
	case strings.HasPrefix(msg, "ALLDOWN"):
		return pick.ErrAllDown
	case strings.HasPrefix(msg, "NOVALID"):
		return pick.ErrNoValidBackend
	case isPermission(msg):
		perr := permissionError(msg, op)
		s.logDenied(perr)
		if f := s.onDenied.Load(); f != nil {
			(*f)(perr)
		}
		return perr
	case strings.Contains(strings.ToLower(msg), "db index is out of range"),
		strings.Contains(strings.ToLower(msg), "invalid db index"):
		return fmt.Errorf("%w: the database number in REDIS_URL does not exist on this server: %s", pick.ErrMisconfigured, msg)
	case strings.Contains(msg, "WRONGTYPE"):
		if key := keyOf(msg, op); key != "" && key != s.key {
			return wrongType{key}
		}
		return fmt.Errorf("%w: %q", pick.ErrWrongType, s.key)
	case errors.Is(err, context.Canceled):
		return err
	default:
		return fmt.Errorf("%w: %w", pick.ErrUnavailable, err)
	}
}

// wrongType is pick.ErrWrongType for a key beside the list (the probe
// hash, the tally, ...): errors.Is matches it, as it does for the list, so
// that what tolerates such a key still does; its message names that key,
// not the list, which is fine.
type wrongType struct{ key string }

func (e wrongType) Error() string {
	return fmt.Sprintf("%q, a key beside the rotation list, holds a value of the wrong type (put there by hand? redis-cli TYPE says which)", e.key)
}

func (e wrongType) Is(target error) bool { return target == pick.ErrWrongType }

// keyOf is the key of the command that failed with msg: the one a
// script's call named ("spread: HINCRBY {servers}:picks: WRONGTYPE ..."),
// else op's ("HGETALL {servers}:probe"); "" if neither says.
func keyOf(msg, op string) string {
	if i := strings.Index(msg, scriptCallPrefix); i >= 0 {
		op, _, _ = strings.Cut(msg[i+len(scriptCallPrefix):], ": ")
	}
	_, key, _ := strings.Cut(op, " ")
	return key
}

// classified reports an error that classify has made already: one of
// package pick's.
func classified(err error) bool {
	for _, k := range []error{pick.ErrNoBackends, pick.ErrWrongType, pick.ErrNoValidBackend, pick.ErrAllDown,
		pick.ErrUnavailable, pick.ErrNoPermission, pick.ErrMisconfigured} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// classifyTx is classify for a MULTI/EXEC: a command refused while queued
// (an ACL denial) makes EXEC fail with EXECABORT, and the refusal, not the
// abort, is what to report.
func (s *Store) classifyTx(cmds []redis.Cmder, err error) error {
	if perr := s.deniedIn(cmds); perr != nil {
		return perr
	}
	return s.classify(err)
}

// deniedIn returns the first permission error among cmds, naming the
// command and its key, or nil.
func (s *Store) deniedIn(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && isPermission(err.Error()) {
			op := strings.ToUpper(c.Name())
			if args := c.Args(); len(args) > 1 {
				op += fmt.Sprint(" ", args[1])
			}
			return s.classifyOp(err, op)
		}
	}
	return nil
}

// isPermission reports an ACL denial, as Redis words it to a client
// (NOPERM ...) or, from 7.0, inside a script.
func isPermission(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(msg, "NOPERM") ||
		strings.Contains(m, "no permissions to") ||
		strings.Contains(m, "the user executing the script can't")
}

// permissionError names the command that msg says was refused: the
// command a script's call named, else the one Redis named, else op.
func permissionError(msg, op string) *pick.PermissionError {
	e := &pick.PermissionError{Command: op, Reply: msg}
	if i := strings.Index(msg, scriptCallPrefix); i >= 0 {
		rest := msg[i+len(scriptCallPrefix):]
		// "SCARD {servers}:down: ERR The user ... script: SHA, on @user_script:12."
		if what, reply, ok := strings.Cut(rest, ": "); ok {
			name, key, _ := strings.Cut(what, " ")
			e.Command = strings.TrimSpace(strings.ToUpper(name) + " " + key)
			e.Reply = reply
		}
	} else if m := deniedCommand.FindStringSubmatch(msg); m != nil {
		e.Command = strings.ToUpper(m[1])
		if cmd, key, ok := strings.Cut(op, " "); ok && strings.EqualFold(cmd, m[1]) {
			e.Command += " " + key
		}
	}
	// Redis ends a script's error with where it happened; that says nothing
	// to the reader.
	if reply, _, ok := strings.Cut(e.Reply, " script: "); ok {
		e.Reply = reply
	}
	e.Reply = strings.TrimPrefix(e.Reply, "failed to initialize connection options: ")
	return e
}

// OnDenied makes f hear every command that Redis refuses to this Store's
// user (the dispatcher counts them in a metric), whatever sent it: a pick,
// the health checks, the snapshot's reads. Missing's checks are not
// refusals and are not reported.
func (s *Store) OnDenied(f func(*pick.PermissionError)) { s.onDenied.Store(&f) }

// deniedLogEvery bounds how often one refused command is logged.
const deniedLogEvery = time.Minute

// logDenied logs a permission error, at most once per deniedLogEvery per
// command: every pick may meet it.
func (s *Store) logDenied(e *pick.PermissionError) {
	now := time.Now()
	if last, ok := s.denied.Load(e.Command); ok && now.Sub(last.(time.Time)) < deniedLogEvery {
		return
	}
	s.denied.Store(e.Command, now)
	s.log.Error("redis refuses a command to this user: grant it in the user's ACL (docs/security.md)",
		"command", e.Command, "key", s.key, "reply", e.Reply)
}

// isUnknownCommand reports Redis refusing a command it does not know, as
// it answers directly ("ERR unknown command") or from a script ("Unknown
// Redis command called from script", "... from Lua script").
func isUnknownCommand(err error) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "unknown command") || strings.Contains(msg, "unknown redis command")
}
