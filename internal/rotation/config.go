package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/app"
)

// The settings shared by the seeder and the dispatcher.
var (
	RedisURL = app.Setting{Name: "REDIS_URL", Default: "redis://localhost:6379/0",
		Usage: "where the list lives, in redis.ParseURL form: redis://[:password@]host:port/db, rediss:// for TLS, unix:///path.sock"}
	RedisKey = app.Setting{Name: "REDIS_KEY", Default: "servers",
		Usage: "the Redis list that holds the backend URLs"}
)

// Connect parses rawURL with redis.ParseURL and returns a client for it.
// Context deadlines apply to every command, so a caller bounds how long it
// waits on Redis. name shows in CLIENT LIST.
//
// Commands are never retried: go-redis would retry a command whose reply was
// lost, and a second LMOVE skips a backend while a second RPUSH adds an entry
// twice. A failure is reported instead (the dispatcher answers 503).
// Connecting is still retried by go-redis's pool.
func Connect(rawURL, name string) (*redis.Client, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		// Report the reason without the URL itself, which may hold a password.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("%s: %w", RedisURL.Name, err)
	}
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1 // -1, not 0, disables retries
	if opts.ClientName == "" {
		opts.ClientName = name
	}
	return redis.NewClient(opts), nil
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
