package store

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/spreadlb/spread/internal/app"
)

// RedisKey is the setting that names the list, shared by the seeder and
// the dispatcher.
var RedisKey = app.Setting{Name: "REDIS_KEY", Default: "servers",
	Usage: "the Redis list that holds the backend URLs; its other keys are {KEY}:* (docs/security.md)"}

// LoadKey reads REDIS_KEY and refuses a key that no one could type or see:
// blank, or holding a space or a control character.
func LoadKey(getenv func(string) string) (string, error) {
	key := RedisKey.Get(getenv)
	if strings.TrimSpace(key) == "" || strings.ContainsFunc(key, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", fmt.Errorf("%s=%q: want a Redis key name without spaces or control characters, such as %s", RedisKey.Name, key, RedisKey.Default)
	}
	return key, nil
}

// keys are the Redis keys beside one list, each in the list's hash slot
// (sibling), so that one script may touch any of them with the list on a
// Redis Cluster.
type keys struct {
	tally      string // the steps taken per entry (rotate.go): "{servers}:picks"
	down       string // the entries the health checks mark down (health.go)
	probes     string // origin -> the origin probed instead (health.go)
	reports    string // failed connections proxies report (health.go)
	lease      string // who runs the health checks (health.go)
	inflight   string // requests in flight per entry, every live dispatcher's added up (inflight.go)
	alive      string // the dispatchers whose counts count (inflight.go)
	turn       string // least-conn's tie-break position (inflight.go)
	cands      string // the prefix of least-conn's stored candidate lists (inflight.go)
	strategy   string // the strategy every dispatcher runs, if stored (strategy.go)
	version    string // changes with every change of the list's entries or down set (version.go)
	quarantine string // entries too long to be a backend, moved out of the list (rotate.go)
	member     string // prefix of one backend's registration, + its URL (members.go)
	members    string // the URLs that registered: the reconciler's index (members.go)
	joined     string // the entries the reconciler put in the list, and when (members.go)
	since      string // when each entry last became eligible: slow start's ramp (members.go)
	ejected    string // the entries ejected now, and until when (eject.go)
	ejection   string // how many times each entry was ejected, and when last (eject.go)
}

func keysOf(key string) keys {
	return keys{tally: tallyKey(key), down: sibling(key, "down"), probes: sibling(key, "probe"),
		reports: sibling(key, "reports"), lease: sibling(key, "lease"),
		inflight: sibling(key, "inflight"), alive: sibling(key, "alive"), turn: sibling(key, "turn"), cands: sibling(key, "cands"),
		strategy: sibling(key, "strategy"), version: sibling(key, "version"), quarantine: sibling(key, "quarantine"),
		member: sibling(key, "member") + ":", members: sibling(key, "members"), joined: sibling(key, "joined"),
		since: sibling(key, "since"), ejected: sibling(key, "ejected"), ejection: sibling(key, "ejections")}
}

// LeaseKey returns the Redis key of the health checks' lease, in the list's
// hash slot: "{servers}:lease" for "servers".
func (s *Store) LeaseKey() string { return s.keys.lease }

// DownKey returns the Redis key of the set of entries marked down, in the
// list's hash slot: "{servers}:down" for "servers".
func (s *Store) DownKey() string { return s.keys.down }

// VersionKey returns the Redis key of the list's version, in the list's
// hash slot: "{servers}:version" for "servers".
func (s *Store) VersionKey() string { return s.keys.version }

// QuarantineKey returns the Redis key of the list of entries moved out of
// the rotation for their length, in the list's hash slot:
// "{servers}:quarantine" for "servers".
func (s *Store) QuarantineKey() string { return s.keys.quarantine }

// ProbeKey returns the Redis key of the hash of probe addresses, in the
// list's hash slot: "{servers}:probe" for "servers".
func (s *Store) ProbeKey() string { return s.keys.probes }

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
