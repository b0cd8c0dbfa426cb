package redisconn_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

var three = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

// env is a getenv over m.
func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// rotateOver connects to url with tc and takes two rotation steps of a
// freshly seeded list.
func rotateOver(url string, tc *tls.Config) error {
	rdb, err := redisconn.ConnectTLS(url, "test", tc)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := store.NewStore(rdb, "servers", nil)
	if err := s.Replace(ctx, three); err != nil {
		return err
	}
	rot := store.NewRotation(s)
	for _, want := range []string{three[2], three[1]} {
		u, err := rot.Next(ctx)
		if err != nil {
			return err
		}
		if u.String() != want {
			return fmt.Errorf("got %s, want %s", u, want)
		}
	}
	return nil
}

// A Redis with a certificate from a private CA: REDIS_TLS_CA makes it
// trusted; without it, the connection is refused (unknown authority).
func TestTLSWithAPrivateCA(t *testing.T) {
	srv := redistest.StartTLS(t, false)
	tc, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": srv.CA}))
	if err != nil {
		t.Fatal(err)
	}
	if err := rotateOver(srv.TLSURL, tc); err != nil {
		t.Errorf("with REDIS_TLS_CA: %v", err)
	}
	if err := rotateOver(srv.TLSURL, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without REDIS_TLS_CA: got %v, want a certificate error", err)
	}
}

// A Redis with tls-auth-clients yes takes the client certificate of
// REDIS_TLS_CERT and REDIS_TLS_KEY, and refuses a client without one.
func TestMutualTLS(t *testing.T) {
	srv := redistest.StartTLS(t, true)
	tc, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": srv.CA, "REDIS_TLS_CERT": srv.Cert, "REDIS_TLS_KEY": srv.Key}))
	if err != nil {
		t.Fatal(err)
	}
	if err := rotateOver(srv.TLSURL, tc); err != nil {
		t.Errorf("with a client certificate: %v", err)
	}
	caOnly, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": srv.CA}))
	if err != nil {
		t.Fatal(err)
	}
	if err := rotateOver(srv.TLSURL, caOnly); err == nil {
		t.Error("without a client certificate: got no error, want the server to refuse")
	}
}

// A one-node Cluster over mutual TLS (tls-cluster yes: the node announces
// its TLS port): rediss+cluster:// takes the same files.
func TestMutualTLSToACluster(t *testing.T) {
	srv := redistest.StartTLS(t, true, "--cluster-enabled", "yes", "--tls-cluster", "yes")
	ctx := context.Background()
	if err := srv.Client.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := srv.Client.Do(ctx, "CLUSTER", "INFO").Text()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %v\n%s", err, info)
		}
	}
	tc, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": srv.CA, "REDIS_TLS_CERT": srv.Cert, "REDIS_TLS_KEY": srv.Key}))
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("rediss+cluster://127.0.0.1:%d", srv.Port)
	if err := rotateOver(url, tc); err != nil {
		t.Errorf("cluster over mutual TLS: %v", err)
	}
	// The permission check reaches the node that holds the list, over the
	// same TLS.
	rdb, err := redisconn.ConnectTLS(url, "test", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if missing, err := store.NewStore(rdb, "servers", nil).Missing(ctx, store.OpRead, store.OpRotate); err != nil || len(missing) > 0 {
		t.Errorf("the check on a cluster: got %q (err %v), want nothing missing", missing, err)
	}
}

// A Sentinel URL carries the files to the Sentinels and the master alike
// (go-redis uses one TLS configuration for both).
func TestTLSFilesReachSentinelClients(t *testing.T) {
	pki := redistest.NewPKI(t, t.TempDir())
	tc, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": pki.CA, "REDIS_TLS_CERT": pki.ClientCert, "REDIS_TLS_KEY": pki.ClientKey}))
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := redisconn.ConnectTLS("rediss+sentinel://s1:26379/0?master_name=mymaster", "test", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	o := rdb.(*redis.Client).Options()
	if o.TLSConfig == nil || o.TLSConfig.RootCAs == nil || !o.TLSConfig.RootCAs.Equal(tc.RootCAs) || len(o.TLSConfig.Certificates) != 1 {
		t.Errorf("the Sentinel client's TLS configuration lacks the CA or the client certificate: %+v", o.TLSConfig)
	}
}

// Bad files, a certificate without its key and files with a URL that is
// not TLS are refused at start, naming the variable.
func TestBadTLSSettingsAreRefused(t *testing.T) {
	dir := t.TempDir()
	pki := redistest.NewPKI(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		env  map[string]string
		want string // named in the error
	}{
		{map[string]string{"REDIS_TLS_CA": missing}, "REDIS_TLS_CA"},
		{map[string]string{"REDIS_TLS_CA": junk}, "REDIS_TLS_CA"},
		{map[string]string{"REDIS_TLS_CERT": pki.ClientCert}, "REDIS_TLS_KEY"},
		{map[string]string{"REDIS_TLS_KEY": pki.ClientKey}, "REDIS_TLS_CERT"},
		{map[string]string{"REDIS_TLS_CERT": missing, "REDIS_TLS_KEY": pki.ClientKey}, "REDIS_TLS_CERT"},
		{map[string]string{"REDIS_TLS_CERT": pki.ClientCert, "REDIS_TLS_KEY": missing}, "REDIS_TLS_KEY"},
		{map[string]string{"REDIS_TLS_CERT": pki.ClientCert, "REDIS_TLS_KEY": pki.ServerKey}, "REDIS_TLS_CERT and REDIS_TLS_KEY"},
		{map[string]string{"REDIS_TLS_CERT": junk, "REDIS_TLS_KEY": junk}, "REDIS_TLS_CERT and REDIS_TLS_KEY"},
	} {
		_, err := redisconn.LoadTLS(env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %s", tc.env, err, tc.want)
		}
	}
	tc, err := redisconn.LoadTLS(env(map[string]string{"REDIS_TLS_CA": pki.CA}))
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"redis://localhost:6379/0", "unix:///run/redis.sock", "redis+cluster://n1:7000"} {
		if _, err := redisconn.ConnectTLS(url, "test", tc); err == nil || !strings.Contains(err.Error(), "REDIS_TLS_CA") || !strings.Contains(err.Error(), "rediss://") {
			t.Errorf("%s with REDIS_TLS_CA: got %v, want an error asking for rediss://", url, err)
		}
	}
}
