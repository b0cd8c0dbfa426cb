// Package redisconn connects the programs to Redis: REDIS_URL (one
// server, Sentinel or Cluster, through go-redis's URL parsers) and the TLS
// files REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY. Package store does
// the rest with the client it returns.
package redisconn

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/app"
)

// The connection settings shared by the seeder and the dispatcher.
var (
	RedisURL = app.Setting{Name: "REDIS_URL", Default: "redis://localhost:6379/0",
		Usage: "where the list lives: redis://[:password@]host:port/db (rediss:// for TLS, unix:///path.sock), redis+sentinel://sentinel:26379/db?master_name=NAME&addr=sentinel2:26379 for a Sentinel-managed master, redis+cluster://node:6379?addr=node2:6379 for a Cluster"}
	RedisTLSCA = app.Setting{Name: "REDIS_TLS_CA", Default: "",
		Usage: "rediss:// only: a PEM file of the CA certificates that Redis's certificate must chain to, instead of the system's (docs/security.md)"}
	RedisTLSCert = app.Setting{Name: "REDIS_TLS_CERT", Default: "",
		Usage: "rediss:// only: a PEM file of this client's certificate, for a Redis with tls-auth-clients yes (mutual TLS); needs REDIS_TLS_KEY"}
	RedisTLSKey = app.Setting{Name: "REDIS_TLS_KEY", Default: "",
		Usage: "rediss:// only: a PEM file of the private key of REDIS_TLS_CERT"}
)

// LoadTLS reads REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY, and returns
// what they give to a TLS client, or nil when none is set. A file that
// cannot be read or parsed, or a certificate without its key (or a key
// without its certificate), is refused, naming the variable.
func LoadTLS(getenv func(string) string) (*tls.Config, error) {
	ca, cert, key := RedisTLSCA.Get(getenv), RedisTLSCert.Get(getenv), RedisTLSKey.Get(getenv)
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	tc := &tls.Config{}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", RedisTLSCA.Name, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s=%q: want a PEM file of CA certificates; it holds none", RedisTLSCA.Name, ca)
		}
	}
	switch {
	case cert != "" && key == "":
		return nil, fmt.Errorf("%s is set and %s is not: a client certificate needs its private key", RedisTLSCert.Name, RedisTLSKey.Name)
	case cert == "" && key != "":
		return nil, fmt.Errorf("%s is set and %s is not: a private key needs its certificate", RedisTLSKey.Name, RedisTLSCert.Name)
	case cert != "":
		for _, f := range []app.Setting{RedisTLSCert, RedisTLSKey} {
			if _, err := os.Stat(f.Get(getenv)); err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s and %s: want a PEM certificate and its PEM private key: %w", RedisTLSCert.Name, RedisTLSKey.Name, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

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
// Every key package store uses for one list shares the list's hash slot,
// so the rotation works the same on a Cluster. Context deadlines apply to
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
	return ConnectTLS(rawURL, name, nil)
}

// ConnectTLS is Connect with the CA certificates and client certificate of
// tc (LoadTLS), for a rediss URL of any topology: they apply to the server,
// the Sentinels and every Cluster node alike. A tc with any other URL is
// refused: the files would be silently ignored.
//
// The client does not send CLIENT SETINFO (go-redis's identity): a
// least-privilege ACL user need not be granted it (docs/security.md).
func ConnectTLS(rawURL, name string, tc *tls.Config) (redis.UniversalClient, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	base, topology, _ := strings.Cut(scheme, "+")
	plain := base + "://" + rest
	if tc != nil && base != "rediss" {
		return nil, fmt.Errorf("%s, %s and %s need a rediss:// %s (TLS); it is %s://...",
			RedisTLSCA.Name, RedisTLSCert.Name, RedisTLSKey.Name, RedisURL.Name, scheme)
	}
	withTLS := func(c *tls.Config) {
		if c != nil && tc != nil {
			c.RootCAs, c.Certificates = tc.RootCAs, tc.Certificates
		}
	}
	var rdb redis.UniversalClient
	var err error
	switch topology {
	case "":
		var o *redis.Options
		if o, err = redis.ParseURL(rawURL); err == nil {
			o.ContextTimeoutEnabled, o.MaxRetries = true, -1 // -1, not 0, disables retries
			o.ClientName = cmp.Or(o.ClientName, name)
			o.DisableIdentity = true
			withTLS(o.TLSConfig)
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
			o.DisableIdentity = true
			withTLS(o.TLSConfig)
			rdb = redis.NewFailoverClient(o)
		}
	case "cluster":
		var o *redis.ClusterOptions
		if o, err = redis.ParseClusterURL(plain); err == nil {
			o.ContextTimeoutEnabled, o.MaxRetries = true, -1
			o.ClientName = cmp.Or(o.ClientName, name)
			o.DisableIdentity = true
			withTLS(o.TLSConfig)
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
