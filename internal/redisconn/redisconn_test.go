package redisconn_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

func TestConnectChoosesTheTopologyFromTheScheme(t *testing.T) {
	for _, tc := range []struct {
		url, kind string
		addrs     []string // a Cluster's seed nodes
	}{
		{"redis://localhost:6379/0", "one server", nil},
		{"rediss://:secret@cache.example:6380/2", "one server", nil},
		{"unix:///run/redis.sock", "one server", nil},
		{"redis+sentinel://s1:26379/0?master_name=mymaster&addr=s2:26379&addr=s3:26379", "sentinel", nil},
		{"redis+cluster://n1:7000?addr=n2:7001", "cluster", []string{"n1:7000", "n2:7001"}},
	} {
		rdb, err := redisconn.Connect(tc.url, "test")
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		switch c := rdb.(type) {
		case *redis.ClusterClient:
			o := c.Options()
			if tc.kind != "cluster" || !slices.Equal(o.Addrs, tc.addrs) || o.MaxRetries > 0 || !o.ContextTimeoutEnabled {
				t.Errorf("%s: got a Cluster client on %q (retries %d, context timeouts %v), want %s",
					tc.url, o.Addrs, o.MaxRetries, o.ContextTimeoutEnabled, tc.kind)
			}
		case *redis.Client:
			o := c.Options()
			// go-redis stores "no retries" (-1) as 0. A Sentinel-managed
			// client says what it is in its address.
			gotKind := "one server"
			if o.Addr == "FailoverClient" {
				gotKind = "sentinel"
			}
			if gotKind != tc.kind || o.MaxRetries > 0 || !o.ContextTimeoutEnabled || o.ClientName != "test" {
				t.Errorf("%s: got %s at %q (retries %d, context timeouts %v, name %q), want %s, no retries, context timeouts, name test",
					tc.url, gotKind, o.Addr, o.MaxRetries, o.ContextTimeoutEnabled, o.ClientName, tc.kind)
			}
		default:
			t.Errorf("%s: got a %T", tc.url, rdb)
		}
		rdb.Close()
	}
}

func TestConnectRefusesBadURLsWithoutShowingThem(t *testing.T) {
	for _, raw := range []string{
		"http://localhost:6379",
		"redis+replica://localhost:6379",
		"redis+sentinel://s1:26379/0", // no master_name
		"redis://:hunter2@localhost:6379/notadb",
		"redis+cluster://:hunter2@n1:7000?bogus=1",
	} {
		_, err := redisconn.Connect(raw, "test")
		if err == nil {
			t.Errorf("%s: got no error", raw)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "REDIS_URL: ") || strings.Contains(msg, "hunter2") {
			t.Errorf("%s: got %q, want an error that names REDIS_URL and hides the password", raw, msg)
		}
	}
}

func TestConnectToOneServer(t *testing.T) {
	srv := redistest.Start(t)
	if err := rotateOver(srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	rdb, err := redisconn.Connect(srv.URL, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	name, err := rdb.Do(context.Background(), "CLIENT", "GETNAME").Text()
	if err != nil || name != "test" {
		t.Errorf("CLIENT GETNAME: got (%q, %v), want test", name, err)
	}
}

// A database number the server does not have is a misconfiguration, not
// Redis being unavailable.
func TestDatabaseOutOfRangeIsAMisconfiguration(t *testing.T) {
	srv := redistest.Start(t)
	rdb, err := redisconn.Connect(srv.URL+"?db=99", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	s := store.NewStore(rdb, "servers", nil)
	for _, call := range []func() error{
		func() error { _, err := s.Len(context.Background()); return err },
		func() error { _, err := store.NewRotation(s).Next(context.Background()); return err },
		func() error { return s.Ping(context.Background()) },
	} {
		if err := call(); !errors.Is(err, pick.ErrMisconfigured) || errors.Is(err, pick.ErrUnavailable) || !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("got %v, want pick.ErrMisconfigured naming REDIS_URL, not pick.ErrUnavailable", err)
		}
	}
}
