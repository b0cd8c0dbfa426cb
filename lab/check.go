package main

import (
	"io"
	"slices"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/redisconn"
)

// checkSettings is `lab check`: it reads the settings as `lab serve` does
// and prints each as NAME=value, one a line in the tables' order (the
// scenario's, then the console's, then Redis's TLS files), with the value
// the console would use; a value it cannot use is the error, naming the
// setting. With a running stack (LAB_BACKENDS, LAB_DISPATCHERS, REDIS_URL)
// it also reads the TLS files and parses REDIS_URL, without connecting.
// `make k8s-check` asks it about the containers that run the console
// (deploy/kubernetes/check), as it asks the other programs' `check`.
//
// LAB_TOKEN, when set, prints as xxxxx, and a password in REDIS_URL as the
// other programs print it, so that the output can go into a log.
func checkSettings(getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadServeConfig(getenv)
	if err != nil {
		return err
	}
	if cfg.running != nil {
		tc, err := redisconn.LoadTLS(getenv)
		if err != nil {
			return err
		}
		rdb, err := redisconn.ConnectTLS(cfg.running.redisURL, "spread-lab", tc)
		if err != nil {
			return err
		}
		rdb.Close()
	}
	return app.PrintSettings(stdout, checkedSettings(), func(name string) string {
		if v := getenv(name); name == tokenSetting.name && v != "" {
			return "xxxxx"
		}
		return getenv(name)
	})
}

// checkedSettings are every setting `lab serve` reads, as `lab check`
// prints them.
func checkedSettings() []app.Setting {
	var out []app.Setting
	for _, s := range slices.Concat(settings, serveSettings) {
		out = append(out, app.Setting{Name: s.name, Default: s.def, Usage: s.usage})
	}
	return append(out, redisconn.RedisTLSCA, redisconn.RedisTLSCert, redisconn.RedisTLSKey)
}
