package main

import (
	"io"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/redisconn"
)

// checkConfig is `dispatcher check`. cfg is what loadConfig accepted; the
// one setting it leaves to the start, REDIS_URL, is parsed here as the start
// parses it (redisconn.ConnectTLS, which does not connect yet), and the client
// is closed at once. Then every setting is printed as NAME=value, the value
// this dispatcher would use (app.PrintSettings). deploy/kubernetes/check
// runs it for each dispatcher container of the manifests, so that a value
// the dispatcher would refuse fails there, with the dispatcher's own message.
func checkConfig(cfg config, getenv func(string) string, stdout io.Writer) error {
	rdb, err := redisconn.ConnectTLS(cfg.redisURL, "dispatcher", cfg.redisTLS)
	if err != nil {
		return err
	}
	rdb.Close()
	return app.PrintSettings(stdout, settings, getenv)
}
