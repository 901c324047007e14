package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func verify(t *testing.T, b *Bundle, name string, at time.Time) error {
	t.Helper()
	pool, err := CertPool(b.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(b.Certificate.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: at})
	return err
}

func TestEnsureCreatesAndReuses(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	b, err := Ensure(dir, Options{Hostname: "till-soc-1", ExtraNames: []string{"collector.example", "10.1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "till-soc-1", "collector.example", "10.1.2.3"} {
		if err := verify(t, b, name, time.Now()); err != nil {
			t.Errorf("SAN %s: %v", name, err)
		}
	}
	if err := verify(t, b, "other.example", time.Now()); err == nil {
		t.Error("certificate verified for a name it should not carry")
	}
	for file, want := range map[string]os.FileMode{CAKeyFile: 0o600, ServerKeyFile: 0o600, CAFile: 0o644, ServerCertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", file, st.Mode().Perm(), want)
		}
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", st.Mode().Perm())
	}
	if b.CAPath != filepath.Join(dir, CAFile) {
		t.Errorf("CAPath %s", b.CAPath)
	}

	serverBefore, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
	again, err := Ensure(dir, Options{Hostname: "till-soc-1", ExtraNames: []string{"collector.example", "10.1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	serverAfter, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if !bytes.Equal(b.CAPEM, again.CAPEM) {
		t.Error("CA changed on second start")
	}
	if !bytes.Equal(serverBefore, serverAfter) {
		t.Error("server certificate reissued although still valid")
	}
}

func TestEnsureReissuesServerCert(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		second Options
	}{
		{"new SAN", Options{Hostname: "h", ExtraNames: []string{"new.example"}}},
		{"new IP SAN", Options{Hostname: "h", ExtraNames: []string{"192.0.2.7"}}},
		{"near expiry", Options{Hostname: "h", Now: func() time.Time { return time.Now().Add(ServerValidity - RenewBefore/2) }}},
		{"expired", Options{Hostname: "h", Now: func() time.Time { return time.Now().Add(ServerValidity + time.Hour) }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			first, err := Ensure(dir, Options{Hostname: "h"})
			if err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
			second, err := Ensure(dir, tt.second)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
			if bytes.Equal(before, after) {
				t.Fatal("server certificate not reissued")
			}
			if !bytes.Equal(first.CAPEM, second.CAPEM) {
				t.Fatal("CA replaced; it must never be")
			}
			now := time.Now()
			if tt.second.Now != nil {
				now = tt.second.Now()
			}
			if err := verify(t, second, "localhost", now); err != nil {
				t.Fatalf("reissued certificate does not verify: %v", err)
			}
			for _, n := range tt.second.ExtraNames {
				if net.ParseIP(n) == nil {
					if err := verify(t, second, n, now); err != nil {
						t.Errorf("SAN %s: %v", n, err)
					}
				}
			}
		})
	}
}

func TestEnsureRefusesHalfCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Ensure(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Fatalf("got %v, want an error about the missing CA key", err)
	}
}

func TestTLSConfigMinVersion(t *testing.T) {
	t.Parallel()
	b, err := Ensure(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := b.TLSConfig()
	if c.MinVersion < 0x0303 || c.GetCertificate == nil {
		t.Fatalf("TLS config %+v", c)
	}
	if got, err := c.GetCertificate(nil); err != nil || got != b.Current() {
		t.Fatalf("GetCertificate = %v %v, want the current certificate", got, err)
	}
}

// TestServerCertificateRenewsWhileRunning: a collector that runs for
// longer than its certificate lives renews it without a restart, and new
// handshakes get the new certificate.
func TestServerCertificateRenewsWhileRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b, err := Ensure(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	pool, err := CertPool(b.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	served := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12, Time: clock})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := served()
	if renewed, err := b.Renew(); err != nil || renewed {
		t.Fatalf("Renew of a fresh certificate: %v %v", renewed, err)
	}
	mu.Lock()
	now = first.NotAfter.Add(-RenewBefore + time.Hour) // inside the renewal window
	mu.Unlock()
	if renewed, err := b.Renew(); err != nil || !renewed {
		t.Fatalf("Renew near expiry: %v %v", renewed, err)
	}
	second := served()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("handshake still gets the old certificate (not after %v)", second.NotAfter)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if err != nil || !bytes.Contains(onDisk, pemOf(second.Raw)) {
		t.Fatalf("renewed certificate not written to %s: %v", ServerCertFile, err)
	}
}

func pemOf(der []byte) []byte {
	return bytes.TrimSpace(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestGroupReadableCAKeyIsRefused: a CA key others can read (a careless
// restore, a wrong umask) lets anyone on the box mint certificates the
// whole fleet trusts; the collector refuses to start on it and says how to
// fix it in one line.
func TestGroupReadableCAKeyIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Ensure(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, CAKeyFile)
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Ensure with a group-readable CA key: %v, want a one-line error naming chmod 600", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(dir, Options{}); err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
}

// TestCAKeyMovesOutOfTheDataDir: an install from before CADir keeps its CA
// (sensors stay pinned); the key moves into its own 0700 directory, away
// from the server and kill-switch signing keys.
func TestCAKeyMovesOutOfTheDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := Ensure(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The old layout: ca.key beside server.key.
	if err := os.Rename(filepath.Join(dir, CAKeyFile), filepath.Join(dir, legacyCAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CADir)); err != nil {
		t.Fatal(err)
	}
	// Force a reissue so the moved key must sign.
	if err := os.Remove(filepath.Join(dir, ServerCertFile)); err != nil {
		t.Fatal(err)
	}
	again, err := Ensure(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CAPEM, b.CAPEM) {
		t.Fatal("upgrade replaced the CA: every sensor would have to re-pin")
	}
	if _, err := os.Stat(filepath.Join(dir, legacyCAKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("old ca.key still in the data dir: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, CADir))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("CA dir: %v %v", err, fi.Mode())
	}
	if err := verify(t, again, "localhost", time.Now()); err != nil {
		t.Fatal(err)
	}
}
