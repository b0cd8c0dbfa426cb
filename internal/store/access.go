package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
)

// Op is one thing a program does with the list; each needs its own Redis
// commands on the list's keys. Missing checks that the user in REDIS_URL
// may run them.
type Op int

// The operations, and the commands each sends (on the list "servers").
const (
	// OpRead: PING, LLEN, LRANGE servers, and SMEMBERS {servers}:down
	// inside MULTI/EXEC (Read, Len, Ping, Entries), GET {servers}:version
	// (Version); TIME, ZRANGE of {servers}:ejected and HGETALL of
	// {servers}:since inside MULTI/EXEC (ReadExtras). Every dispatcher.
	OpRead Op = iota
	// OpRotate: the shared rotation's script (Next): EVALSHA, EVAL, LMOVE
	// (RPOPLPUSH before Redis 6.2), SCARD, LLEN, SISMEMBER, HINCRBY; to
	// quarantine an entry, LPOP, RPUSH, and TIME, SET of the version; ZCARD,
	// TIME, ZRANGEBYSCORE of {servers}:ejected.
	OpRotate
	// OpHealth: the health checks' scripts and reports (ClaimLease,
	// PublishDown, ReleaseLease, TakeReports): GET, SET, PEXPIRE, DEL on
	// the lease; LRANGE, SMEMBERS, SCARD, SISMEMBER, DEL, SADD on the down
	// set; TIME, SET of the version; HGETALL, DEL; MULTI/EXEC.
	OpHealth
	// OpReport: a proxying dispatcher's ReportFailure: HINCRBY.
	OpReport
	// OpInflight: least-conn's and p2c's shared counts (Inflight), through
	// EVALSHA/EVAL: TIME, ZSCORE, ZRANGEBYSCORE, ZREMRANGEBYSCORE, ZADD,
	// ZREM on the alive set; HGETALL, HGET, HSET, HDEL, HINCRBY, DEL on the
	// counts; GET, SET on the turn; LLEN, LRANGE, PEXPIRE on a stored
	// candidate list, and DEL, RPUSH, PEXPIRE in MULTI/EXEC to store one.
	OpInflight
	// OpSeed: `seeder seed` (Replace): DEL (of the list, the tally, the
	// quarantine and {servers}:joined), RPUSH, SET of the version, in
	// MULTI/EXEC.
	OpSeed
	// OpSeedProbes: `seeder seed -probe` (ReplaceWithProbes) also: DEL,
	// HSET on the probe hash.
	OpSeedProbes
	// OpAdd: `seeder add`: RPUSH, SET of the version, in MULTI/EXEC.
	OpAdd
	// OpRemove: `seeder remove`: LREM, LLEN, SET of the version, in
	// MULTI/EXEC.
	OpRemove
	// OpProbes: `seeder probe`: HGETALL, HSET, HDEL on the probe hash.
	OpProbes
	// OpList: `seeder list` (Entries, Down, InFlight, Quarantine, Members,
	// Ejections): LRANGE, SMEMBERS, and TIME, ZRANGE, HGETALL in
	// MULTI/EXEC; LLEN and LRANGE of the quarantine; PTTL and GET of each
	// registration.
	OpList
	// OpWatch: `seeder watch`: OpRotate, and HGETALL of the tally (Tally).
	OpWatch
	// OpPing: PING (`seeder healthcheck`).
	OpPing
	// OpStrategy: a dispatcher reading the stored strategy: GET.
	OpStrategy
	// OpSetStrategy: `seeder strategy` and POST /strategy: GET, SET, DEL.
	OpSetStrategy
	// OpReconcile: the lease holder's reconciler (Reconcile), through
	// EVALSHA/EVAL: GET of the lease, TIME, LRANGE, RPUSH, LREM of the
	// list, SMEMBERS, SREM of {servers}:members, PTTL of each
	// {servers}:member:URL, HGETALL, HSET, HDEL of {servers}:joined,
	// {servers}:since and {servers}:ejections, SMEMBERS of the down set,
	// ZREMRANGEBYSCORE, ZRANGE, ZREM of {servers}:ejected, SET of the
	// version. Every dispatcher that runs health checks.
	OpReconcile
	// OpEject: outlier ejection (Eject), through EVALSHA/EVAL: TIME,
	// ZREMRANGEBYSCORE, ZSCORE, ZRANGE, ZADD of {servers}:ejected, HGET,
	// HSET of {servers}:ejections, LRANGE of the list, SET of the version.
	// MODE=proxy with EJECT_AFTER > 0.
	OpEject
)

// probe is one command whose permission is checked, with arguments that
// make it valid (Redis checks the arity before the permission).
type probe struct {
	args []any
	alt  []any // tried when Redis does not know args[0] (LMOVE before 6.2)
}

func (p probe) name() string {
	s := strings.ToUpper(fmt.Sprint(p.args[0]))
	if len(p.args) > 1 && s != "EVALSHA" && s != "EVAL" {
		s += fmt.Sprint(" ", p.args[1])
	}
	return s
}

// checks lists the commands op sends, as the Store sends them.
func (s *Store) checks(op Op) []probe {
	key, down, tally := s.key, s.keys.down, s.keys.tally
	lease, probes, reports := s.keys.lease, s.keys.probes, s.keys.reports
	inflight, alive, turn := s.keys.inflight, s.keys.alive, s.keys.turn
	p := func(args ...any) probe { return probe{args: args} }
	script := func(sc *redis.Script, keys ...string) []probe {
		sha := append([]any{"EVALSHA", sc.Hash(), len(keys)}, toArgs(keys)...)
		eval := append([]any{"EVAL", "return 0", len(keys)}, toArgs(keys)...)
		return []probe{p(sha...), p(eval...)}
	}
	version := []probe{p("TIME"), p("SET", s.keys.version, "x")}
	ejected, ejection, since := s.keys.ejected, s.keys.ejection, s.keys.since
	members, joined, member := s.keys.members, s.keys.joined, s.keys.member+"x"
	rotate := slices.Concat(script(stepScript, key, tally, down, s.keys.quarantine, s.keys.version, ejected),
		[]probe{{args: []any{"LMOVE", key, key, "RIGHT", "LEFT"}, alt: []any{"RPOPLPUSH", key, key}},
			p("SCARD", down), p("LLEN", key), p("SISMEMBER", down, "x"), p("HINCRBY", tally, "x", 1),
			p("LPOP", key), p("RPUSH", s.keys.quarantine, "x"),
			p("ZCARD", ejected), p("ZRANGEBYSCORE", ejected, "-inf", 0)}, version)
	switch op {
	case OpRead:
		return []probe{p("PING"), p("LLEN", key), p("LRANGE", key, 0, -1), p("SMEMBERS", down), p("GET", s.keys.version),
			p("TIME"), p("ZRANGE", ejected, 0, -1, "WITHSCORES"), p("HGETALL", since)}
	case OpReconcile:
		return slices.Concat(script(reconcileScript, lease, key, members, joined, since, down, ejected, ejection, s.keys.version),
			[]probe{p("GET", lease), p("LRANGE", key, 0, -1), p("RPUSH", key, "x"), p("LREM", key, 1, "x"),
				p("SMEMBERS", members), p("SREM", members, "x"), p("PTTL", member),
				p("HGETALL", joined), p("HSET", joined, "x", 1), p("HDEL", joined, "x"),
				p("HGETALL", since), p("HSET", since, "x", 1), p("HDEL", since, "x"), p("HDEL", ejection, "x"),
				p("SMEMBERS", down), p("ZREMRANGEBYSCORE", ejected, "-inf", 0), p("ZRANGE", ejected, 0, -1), p("ZREM", ejected, "x")},
			version)
	case OpEject:
		return slices.Concat(script(ejectScript, ejected, ejection, key, s.keys.version),
			[]probe{p("ZREMRANGEBYSCORE", ejected, "-inf", 0), p("ZSCORE", ejected, "x"), p("ZRANGE", ejected, 0, -1),
				p("ZADD", ejected, 0, "x"), p("LRANGE", key, 0, -1), p("HGET", ejection, "x"), p("HSET", ejection, "x", "y")},
			version)
	case OpRotate:
		return rotate
	case OpHealth:
		return slices.Concat(script(claimScript, lease, key, down, probes),
			script(publishScript, lease, down, s.keys.version), script(releaseScript, lease),
			[]probe{p("GET", lease), p("SET", lease, "x", "PX", 1), p("PEXPIRE", lease, 1), p("DEL", lease),
				p("LRANGE", key, 0, -1), p("SMEMBERS", down), p("SCARD", down), p("SISMEMBER", down, "x"),
				p("DEL", down), p("SADD", down, "x"),
				p("HGETALL", probes), p("HGETALL", reports), p("DEL", reports)}, version)
	case OpReport:
		return []probe{p("HINCRBY", reports, "x", 1)}
	case OpInflight:
		own, cands := inflight+":x", s.keys.cands+":x"
		return slices.Concat(script(inflightScript, inflight, alive, turn, own, cands),
			script(withdrawScript, inflight, alive, own),
			[]probe{p("TIME"), p("ZSCORE", alive, "x"), p("ZRANGEBYSCORE", alive, "-inf", 0), p("ZREMRANGEBYSCORE", alive, "-inf", 0),
				p("ZADD", alive, 0, "x"), p("ZREM", alive, "x"),
				p("HGETALL", own), p("HGET", own, "x"), p("HSET", own, "x", 1), p("HDEL", own, "x"), p("DEL", own),
				p("HGETALL", inflight), p("HGET", inflight, "x"), p("HINCRBY", inflight, "x", 1), p("HDEL", inflight, "x"),
				p("GET", turn), p("SET", turn, 0),
				p("LLEN", cands), p("LRANGE", cands, 0, 1), p("PEXPIRE", cands, 1), p("DEL", cands), p("RPUSH", cands, "x")})
	case OpSeed:
		return []probe{p("DEL", key), p("DEL", tally), p("DEL", s.keys.quarantine), p("DEL", joined), p("RPUSH", key, "x"),
			p("SET", s.keys.version, "x")}
	case OpSeedProbes:
		return []probe{p("DEL", probes), p("HSET", probes, "x", "y")}
	case OpAdd:
		return []probe{p("RPUSH", key, "x"), p("SET", s.keys.version, "x")}
	case OpRemove:
		return []probe{p("LREM", key, 0, "x"), p("LLEN", key), p("SET", s.keys.version, "x")}
	case OpProbes:
		return []probe{p("HGETALL", probes), p("HSET", probes, "x", "y"), p("HDEL", probes, "x")}
	case OpList:
		return []probe{p("LRANGE", key, 0, -1), p("SMEMBERS", down), p("TIME"),
			p("ZRANGE", alive, 0, -1, "WITHSCORES"), p("HGETALL", inflight), p("HGETALL", inflight+":x"),
			p("LLEN", s.keys.quarantine), p("LRANGE", s.keys.quarantine, 0, 1),
			p("SMEMBERS", members), p("HGETALL", joined), p("PTTL", member), p("GET", member),
			p("ZRANGE", ejected, 0, -1, "WITHSCORES"), p("HGETALL", ejection)}
	case OpWatch:
		return append(rotate, p("HGETALL", tally))
	case OpPing:
		return []probe{p("PING")}
	case OpStrategy:
		return []probe{p("GET", s.keys.strategy)}
	case OpSetStrategy:
		return []probe{p("GET", s.keys.strategy), p("SET", s.keys.strategy, "x"), p("DEL", s.keys.strategy)}
	}
	return nil
}

// Missing returns the commands that ops need and the user in REDIS_URL may
// not run, each with its key ("SCARD {servers}:down"), in the order ops
// send them; none when the user may run them all. The error is for Redis
// failing to answer, or for a misconfiguration that stops any command
// (pick.ErrMisconfigured, or a *pick.PermissionError for a command every connection
// sends: MULTI, CLIENT|SETNAME, SELECT).
//
// It runs nothing: every command is queued inside MULTI, where Redis checks
// the permission (and the keys) as it queues; a command that cannot be
// queued aborts the transaction, and EXEC then runs none of them. ACL
// DRYRUN would answer the same, but only to an admin: a least-privilege
// user may not run it on itself. MULTI and EXEC are themselves needed by
// every program (Read, the seeder's writes).
func (s *Store) Missing(ctx context.Context, ops ...Op) ([]string, error) {
	var all []probe
	for _, op := range ops {
		all = append(all, s.checks(op)...)
	}
	return s.missing(ctx, all)
}

// MissingToRegister is Missing for a backend that registers as url
// (members.go): PING; SET and DEL of its own {servers}:member:URL, SADD
// of {servers}:members, and LRANGE of the list, which it reads on its way
// out, to see its entry gone; MULTI and EXEC.
func (s *Store) MissingToRegister(ctx context.Context, url string) ([]string, error) {
	p := func(args ...any) probe { return probe{args: args} }
	k := s.MemberKey(url)
	return s.missing(ctx, []probe{p("PING"), p("SET", k, 1, "PX", 1), p("DEL", k), p("SADD", s.keys.members, url),
		p("LRANGE", s.key, 0, -1)})
}

// missing runs the check of Missing over probes, each once.
func (s *Store) missing(ctx context.Context, probes []probe) ([]string, error) {
	var all []probe
	seen := map[string]bool{}
	for _, p := range probes {
		if n := fmt.Sprint(p.args...); !seen[n] {
			seen[n] = true
			all = append(all, p)
		}
	}
	conn, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// MULTI first, alone: without it, the commands would run.
	if err := conn.Do(ctx, "MULTI").Err(); err != nil {
		if isPermission(err.Error()) {
			perr := permissionError(err.Error(), "MULTI")
			if perr.Command == "MULTI" {
				return []string{"MULTI"}, nil
			}
			return nil, perr // a command every connection sends: CLIENT|SETNAME, SELECT
		}
		return nil, s.classifyOp(err, "MULTI")
	}
	// The connection goes back to the pool: it must not stay inside MULTI,
	// whatever stops the check half way.
	aborted := false
	defer func() {
		if !aborted {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Do(dctx, "DISCARD")
			cancel()
		}
	}()
	var queued, alts []*redis.Cmd
	var exec *redis.Cmd
	_, err = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, pr := range all {
			queued = append(queued, p.Do(ctx, pr.args...))
			var alt *redis.Cmd
			if pr.alt != nil {
				alt = p.Do(ctx, pr.alt...)
			}
			alts = append(alts, alt)
		}
		// A command of the wrong arity cannot be queued whatever the
		// user's rights, so EXEC aborts for sure.
		p.Do(ctx, "GET")
		exec = p.Do(ctx, "EXEC")
		return nil
	})
	if exec == nil || exec.Err() == nil || !strings.HasPrefix(exec.Err().Error(), "EXECABORT") {
		// Only a broken connection gets here (EXEC always aborts): its
		// replies are unknown, and so is what is missing.
		if err == nil {
			err = errors.New("EXEC did not abort the permission check")
		}
		return nil, s.classify(err)
	}
	aborted = true
	var missing []string
	for i, pr := range all {
		err := queued[i].Err()
		if isUnknownCommand(err) && alts[i] != nil {
			err = alts[i].Err()
		}
		switch {
		case err == nil:
		case isPermission(err.Error()):
			missing = append(missing, pr.name())
		case isUnknownCommand(err):
			missing = append(missing, pr.name()+" (unknown to this server)")
		default:
			return nil, s.classifyOp(err, pr.name())
		}
	}
	return missing, nil
}

// MissingError lists the commands a program needs and may not run.
type MissingError struct {
	Key      string   // REDIS_KEY
	Commands []string // as Missing returns them
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%v: the user in REDIS_URL may not run %s (grant them in its ACL: docs/security.md)",
		pick.ErrNoPermission, strings.Join(e.Commands, ", "))
}

// Unwrap makes errors.Is(err, pick.ErrNoPermission) true.
func (e *MissingError) Unwrap() error { return pick.ErrNoPermission }

// CheckAccess is Missing as an error: a *MissingError naming every missing
// command, or Missing's own error, or nil.
func (s *Store) CheckAccess(ctx context.Context, ops ...Op) error {
	missing, err := s.Missing(ctx, ops...)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return &MissingError{Key: s.key, Commands: missing}
	}
	return nil
}

// CheckRegister is MissingToRegister as an error, as CheckAccess is
// Missing's.
func (s *Store) CheckRegister(ctx context.Context, url string) error {
	missing, err := s.MissingToRegister(ctx, url)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return &MissingError{Key: s.key, Commands: missing}
	}
	return nil
}

// conn is a connection of the Store's pool to the server that holds the
// list, held until it is closed, so that MULTI and what follows it go down
// the same connection. Missing sends DISCARD before giving it back unless
// its EXEC aborted the transaction, so it never returns to the pool inside
// MULTI.
func (s *Store) conn(ctx context.Context) (*redis.Conn, error) {
	switch c := s.rdb.(type) {
	case *redis.Client:
		return c.Conn(), nil
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, s.key)
		if err != nil {
			return nil, s.classify(err)
		}
		return node.Conn(), nil
	default:
		return nil, fmt.Errorf("%w: cannot check permissions through a %T", pick.ErrUnavailable, s.rdb)
	}
}
