// Package pki keeps the collector's private certificate authority and its
// server certificate in the data dir. Sensors and the CLI pin ca.pem instead
// of trusting system roots, so the collector needs no public certificate and
// a till never trusts anything but its own fleet's collector.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/logkey"
)

// File names inside the data dir.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

// Lifetimes. The CA outlives many server certificates; the server certificate
// is renewed on start once it gets within RenewBefore of expiry, so a
// collector restarted at least monthly never serves an expired certificate.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 397 * 24 * time.Hour
	RenewBefore    = 30 * 24 * time.Hour
)

// Options tunes Ensure. The zero value is usable.
type Options struct {
	// ExtraNames are DNS names or IP addresses added to the server
	// certificate's SANs on top of localhost, 127.0.0.1, ::1 and the hostname.
	ExtraNames []string
	// Hostname overrides os.Hostname (tests).
	Hostname string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Logger receives one line per file created; nil discards.
	Logger *slog.Logger
}

// Bundle is the collector's TLS material after Ensure.
type Bundle struct {
	Dir         string
	CAPath      string // the file sensors and the CLI pin with --ca
	CAPEM       []byte
	CA          *x509.Certificate
	Certificate tls.Certificate // server certificate chain and key
}

// TLSConfig is the server-side TLS configuration: TLS 1.2 or newer with the
// server certificate.
func (b *Bundle) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.Certificate},
	}
}

// Ensure loads the CA and server certificate from dir, creating whatever is
// missing. The CA is created once and never replaced (replacing it would
// orphan every enrolled sensor). The server certificate is reissued when it is
// missing, unreadable, not signed by the CA, near expiry, or lacks a wanted SAN.
func Ensure(dir string, opts Options) (*Bundle, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create data dir: %w", err)
	}
	dns, ips := sans(opts)

	ca, caKey, caPEM, err := loadOrCreateCA(dir, now(), log)
	if err != nil {
		return nil, err
	}
	cert, err := loadServer(dir, ca, now(), dns, ips)
	if err != nil {
		log.Info("issuing server certificate", logkey.Reason, err.Error(), logkey.Path, filepath.Join(dir, ServerCertFile))
		cert, err = issueServer(dir, ca, caKey, now(), dns, ips)
		if err != nil {
			return nil, err
		}
	}
	return &Bundle{
		Dir:         dir,
		CAPath:      filepath.Join(dir, CAFile),
		CAPEM:       caPEM,
		CA:          ca,
		Certificate: cert,
	}, nil
}

// sans returns the DNS names and IPs the server certificate must carry.
func sans(opts Options) ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	host := opts.Hostname
	if host == "" {
		// A machine without a hostname still gets a usable certificate.
		host, _ = os.Hostname()
	}
	names := append([]string{host}, opts.ExtraNames...)
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		n = strings.ToLower(n)
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

func loadOrCreateCA(dir string, now time.Time, log *slog.Logger) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		cert, key, err := parsePair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("pki: %s/%s: %w (restore them from backup; deleting them orphans every enrolled sensor)", certPath, CAKeyFile, err)
		}
		if !cert.IsCA {
			return nil, nil, nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
		}
		return cert, key, certPEM, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		// First start: create below.
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("pki: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("pki: %w", keyErr)
	default:
		// Half a CA cannot sign and must not be silently replaced.
		return nil, nil, nil, fmt.Errorf("pki: only one of %s and %s exists in %s; restore the missing file or remove both to create a new CA (sensors must then re-pin ca.pem)", CAFile, CAKeyFile, dir)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tillwatch collector CA", Organization: []string{"tillwatch"}},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew on sensors
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Key first: a crash in between leaves a key without certificate, which
	// the next start reports instead of silently minting a second CA.
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	log.Info("created collector CA; sensors and the CLI pin this file with --ca", logkey.Path, certPath)
	return cert, key, certPEM, nil
}

// loadServer returns the stored server certificate, or an error saying why it
// must be reissued.
func loadServer(dir string, ca *x509.Certificate, now time.Time, dns []string, ips []net.IP) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("no server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("no server key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("unusable server certificate: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate not signed by the CA: %w", err)
	}
	if now.Add(RenewBefore).After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("server certificate expires %s", leaf.NotAfter.Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return tls.Certificate{}, fmt.Errorf("server certificate not valid before %s", leaf.NotBefore.Format(time.RFC3339))
	}
	for _, n := range dns {
		if !slices.Contains(leaf.DNSNames, n) {
			return tls.Certificate{}, fmt.Errorf("server certificate lacks SAN %s", n)
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return tls.Certificate{}, fmt.Errorf("server certificate lacks SAN %s", ip)
		}
	}
	pair.Leaf = leaf
	return pair, nil
}

func issueServer(dir string, ca *x509.Certificate, caKey crypto.Signer, now time.Time, dns []string, ips []net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	notAfter := now.Add(ServerValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "tillwatch collector", Organization: []string{"tillwatch"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: create server certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(filepath.Join(dir, ServerKeyFile), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeAtomic(filepath.Join(dir, ServerCertFile), certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	return pair, nil
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("private key cannot sign")
	}
	return cert, signer, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	// 128 random bits; rand.Int cannot fail with crypto/rand on Linux.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n.Add(n, big.NewInt(1))
}

// writeAtomic writes data to path via a temp file in the same directory and a
// rename, so a crash never leaves a truncated key or certificate behind.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// CertPool returns a pool holding only the CA in pemBytes; it is what
// clients pin.
func CertPool(pemBytes []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bytes.TrimSpace(pemBytes)) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}
