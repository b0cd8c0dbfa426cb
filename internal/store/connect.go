package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/app"
)

// The settings shared by the seeder and the dispatcher.
var (
	RedisURL = app.Setting{Name: "REDIS_URL", Default: "redis://localhost:6379/0",
		Usage: "where the list lives: redis://[:password@]host:port/db (rediss:// for TLS, unix:///path.sock), redis+sentinel://sentinel:26379/db?master_name=NAME&addr=sentinel2:26379 for a Sentinel-managed master, redis+cluster://node:6379?addr=node2:6379 for a Cluster"}
	RedisKey = app.Setting{Name: "REDIS_KEY", Default: "servers",
		Usage: "the Redis list that holds the backend URLs"}
)

// Connect returns a client for rawURL, one of:
//
//	redis://[[user]:password@]host:port/db   one server (redis.ParseURL); rediss:// for TLS,
//	                                         unix:///path.sock for a socket
//	redis+sentinel://[user:pass@]host:port/db?master_name=NAME[&addr=host2:port]...
//	                                         the master that Sentinels at host:port (and
//	                                         each addr) name NAME (redis.ParseFailoverURL;
//	                                         user:pass are the Sentinels', ?password= the
//	                                         master's); rediss+sentinel:// for TLS
//	redis+cluster://[[user]:password@]host:port[?addr=host2:port]...
//	                                         a Redis Cluster seeded from these nodes
//	                                         (redis.ParseClusterURL); rediss+cluster:// for TLS
//
// Every key this package uses for one list shares the list's hash slot, so
// the rotation works the same on a Cluster. Context deadlines apply to
// every command, so a caller bounds how long it waits on Redis. name shows
// in CLIENT LIST.
//
// Commands are never retried: go-redis would retry a command whose reply was
// lost, and a second LMOVE skips a backend while a second RPUSH adds an entry
// twice. A failure is reported instead (the dispatcher answers 503).
// Connecting is still retried by go-redis's pool, a Cluster's MOVED and ASK
// redirections are followed (the command did not run), and a Sentinel
// client finds the new master after a failover.
func Connect(rawURL, name string) (redis.UniversalClient, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	base, topology, _ := strings.Cut(scheme, "+")
	plain := base + "://" + rest
	var rdb redis.UniversalClient
	var err error
	switch topology {
	case "":
		var o *redis.Options
		if o, err = redis.ParseURL(rawURL); err == nil {
			o.ContextTimeoutEnabled, o.MaxRetries = true, -1 // -1, not 0, disables retries
			o.ClientName = cmp.Or(o.ClientName, name)
			rdb = redis.NewClient(o)
		}
	case "sentinel":
		var o *redis.FailoverOptions
		if o, err = redis.ParseFailoverURL(plain); err == nil && o.MasterName == "" {
			err = errors.New("a redis+sentinel:// URL needs ?master_name=NAME")
		}
		if err == nil {
			o.ContextTimeoutEnabled, o.MaxRetries = true, -1
			o.ClientName = cmp.Or(o.ClientName, name)
			rdb = redis.NewFailoverClient(o)
		}
	case "cluster":
		var o *redis.ClusterOptions
		if o, err = redis.ParseClusterURL(plain); err == nil {
			o.ContextTimeoutEnabled, o.MaxRetries = true, -1
			o.ClientName = cmp.Or(o.ClientName, name)
			rdb = redis.NewClusterClient(o)
		}
	default:
		err = fmt.Errorf("unknown scheme %q: want redis, rediss, unix, redis+sentinel or redis+cluster", scheme)
	}
	if err != nil {
		// Report the reason without the URL itself, which may hold a password.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("%s: %w", RedisURL.Name, err)
	}
	return rdb, nil
}

// LogTo sends go-redis's own messages (such as "failed to dial") to log as
// warnings, so that every line a program writes is structured. It sets a
// process-wide logger in go-redis.
func LogTo(log *slog.Logger) {
	redis.SetLogger(redisLogger{log})
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
