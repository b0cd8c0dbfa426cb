package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TLSServer is a redis-server that also listens for TLS on a loopback
// port, with a certificate authority and certificates made for the test.
type TLSServer struct {
	*Server
	// Port is the TLS port, on 127.0.0.1.
	Port int
	// TLSURL reaches the server over TLS, in the form REDIS_URL takes:
	// rediss://localhost:PORT/0.
	TLSURL string
	// CA is the CA certificate's PEM file: it signed the server's
	// certificate (for localhost and 127.0.0.1) and the client's.
	CA string
	// Cert and Key are a client certificate and its private key, in PEM
	// files, that the server accepts.
	Cert, Key string
}

// StartTLS runs a redis-server for the duration of the test, as Start
// does, that also serves TLS on a free loopback port. With mutual, the
// server asks clients for a certificate signed by CA (tls-auth-clients
// yes); without, it asks for none. extra arguments follow.
func StartTLS(t testing.TB, mutual bool, extra ...string) *TLSServer {
	t.Helper()
	dir := t.TempDir()
	pki := NewPKI(t, dir)
	port := FreePort(t)
	auth := "no"
	if mutual {
		auth = "yes"
	}
	args := append([]string{"--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", pki.ServerCert, "--tls-key-file", pki.ServerKey,
		"--tls-ca-cert-file", pki.CA, "--tls-auth-clients", auth}, extra...)
	srv := Start(t, args...)
	return &TLSServer{Server: srv, Port: port, TLSURL: fmt.Sprintf("rediss://localhost:%d/0", port),
		CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}
}

// PKI is a CA and certificates it signed, as PEM files.
type PKI struct {
	CA                    string // the CA's certificate
	ServerCert, ServerKey string // for localhost and 127.0.0.1
	ClientCert, ClientKey string // for a client
}

// NewPKI makes a CA, a server certificate and a client certificate in dir,
// with crypto/x509 (no openssl needed).
func NewPKI(t testing.TB, dir string) PKI {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spread test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p := PKI{CA: filepath.Join(dir, "ca.crt")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	p.ServerCert, p.ServerKey = issue(2, "server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = issue(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a TCP port that is free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
