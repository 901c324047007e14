package pki

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	if c := b.TLSConfig(); c.MinVersion < 0x0303 || len(c.Certificates) != 1 {
		t.Fatalf("TLS config %+v", c)
	}
}
